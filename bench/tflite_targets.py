"""TFLite backend figures: fashion-cnn on the 10k test set, EfficientNet-Lite0 on held-out crops
(vs the IR's own ONNX artifact), int8 vs fp32 .tflite latency, and ResNet-50 conversion time.

    .venv/bin/python bench/tflite_targets.py [--models fashion-cnn,efficientnet-lite0,resnet50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import machine, peak_rss_mb, scratch, timed

from irq import zoo
from irq.frontends import import_model
from irq.pipeline.prepare import quantize
from irq.pipeline.targets import get_backend, get_target
from irq.verify.metrics import accuracy, agreement, kl_divergence
from irq.verify.run import latency, run_dataset


def build(model: Path, target: str, calib):
    q = quantize(import_model(model), get_target(target), calib)
    backend = get_backend(get_target(target).backend)
    artifact, secs = timed(lambda: backend.lower(q, get_target(target), scratch()))
    return artifact, backend.runner(artifact.path, q), secs


def fashion() -> None:
    model, calib = zoo.get("fashion-cnn").onnx_path, zoo.calibration_data("fashion-cnn")
    test = zoo.eval_data("fashion-cnn", full=True)
    from irq.backends.onnx_qdq import OnnxRunner

    ref = run_dataset(OnnxRunner(str(model)), test)[0]
    rows = {}
    for target in ("onnx-int8-arm", "tflite-int8", "tflite-fp32"):
        _, runner, secs = build(model, target, calib)
        rows[target] = (accuracy(run_dataset(runner, test)[0], test.labels)["top1"], secs)
    fl = accuracy(ref, test.labels)["top1"]
    print(f"fashion-cnn, {len(test)} test images: float {100 * fl:.2f}%")
    for t, (a, s) in rows.items():
        print(f"  {t:14} top-1 {100 * a:.2f}% (drop {100 * (fl - a):+.2f} pt), lowering {s:.1f} s")
    gap = 100 * (rows["tflite-int8"][0] - rows["onnx-int8-arm"][0])
    print(f"  tflite-int8 vs the IR's onnx-int8-arm: {gap:+.2f} pt")


def effnet(crops: int) -> None:
    model = zoo.get("efficientnet-lite0").onnx_path
    calib, held = zoo.calibration_data("efficientnet-lite0", 200), zoo.eval_data("efficientnet-lite0", crops)
    from irq.backends.onnx_qdq import OnnxRunner

    ref = run_dataset(OnnxRunner(str(model)), held)[0]
    out = {}
    for target in ("onnx-int8-arm", "tflite-int8", "tflite-fp32"):
        artifact, runner, secs = build(model, target, calib)
        out[target] = (run_dataset(runner, held)[0], artifact, runner, secs)
    onnx_kl = float(kl_divergence(ref, out["onnx-int8-arm"][0]).mean())
    tfl_kl = float(kl_divergence(ref, out["tflite-int8"][0]).mean())
    a_onnx, a_tfl = agreement(ref, out["onnx-int8-arm"][0])["top1"], agreement(ref, out["tflite-int8"][0])["top1"]
    size = out["tflite-int8"][1].size_bytes / out["tflite-fp32"][1].size_bytes
    lat8 = latency(out["tflite-int8"][2], held, runs=30)
    lat32 = latency(out["tflite-fp32"][2], held, runs=30)
    print(f"efficientnet-lite0, {len(held)} held-out crops:")
    print(f"  KL(float||int8): tflite-int8 {tfl_kl:.4f}, IR onnx-int8-arm {onnx_kl:.4f}, ratio {tfl_kl / onnx_kl:.2f}")
    print(f"  top-1 agreement: tflite-int8 {a_tfl:.3f}, IR onnx {a_onnx:.3f} (diff {a_tfl - a_onnx:+.3f})")
    print(f"  size: int8 .tflite {out['tflite-int8'][1].size_bytes / 1e6:.2f} MB = {100 * size:.1f}% of fp32 .tflite")
    print(f"  latency (LiteRT, XNNPACK, 2 threads): int8 {lat8['median_ms']:.2f} ms, fp32 {lat32['median_ms']:.2f} ms, "
          f"speedup {lat32['median_ms'] / lat8['median_ms']:.2f}x")
    print(f"  info: {json.dumps(out['tflite-int8'][1].info.get('range_fidelity', {}))[:300]}")


def resnet_worker() -> None:
    from resnet50 import export_resnet50

    model = export_resnet50(scratch() / "resnet50.onnx")
    rng = np.random.default_rng(0)
    from irq.data import DataSet

    calib = DataSet({"input": rng.normal(size=(100, 3, 224, 224)).astype(np.float32)})
    q = quantize(import_model(model), get_target("tflite-int8"), calib)
    backend = get_backend("tflite")
    artifact, secs = timed(lambda: backend.lower(q, get_target("tflite-int8"), scratch()))
    print(json.dumps({"seconds": secs, "rss": peak_rss_mb(), "mb": artifact.size_bytes / 1e6,
                      "phases": artifact.info.get("seconds")}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="fashion-cnn,efficientnet-lite0,resnet50")
    ap.add_argument("--crops", type=int, default=200)
    ap.add_argument("--resnet-worker", action="store_true")
    args = ap.parse_args()
    if args.resnet_worker:
        resnet_worker()
        return
    print(f"TFLite targets; {machine()}")
    models = args.models.split(",")
    if "fashion-cnn" in models:
        fashion()
    if "efficientnet-lite0" in models:
        effnet(args.crops)
    if "resnet50" in models:
        out = subprocess.run([sys.executable, __file__, "--resnet-worker"], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"ResNet-50-shaped ONNX -> full-int8 .tflite (100 calibration images): lowering {r['seconds']:.1f} s "
              f"(phases {r['phases']}), peak RSS {r['rss']:.0f} MB, {r['mb']:.1f} MB")


if __name__ == "__main__":
    main()
