"""Accuracy presets side by side, one run, the same data: round-to-nearest, fast, accurate.

- fashion-cnn, int4 per-tensor weights (``--weights int4``, recipe ``per_channel: false``), int8
  activations: top-1 drop against float on the 10,000 Fashion-MNIST test images (the 1,000
  shipped ones when the Debian package is missing), agreement, compile seconds.
- EfficientNet-Lite0 int8 and W4A8 (int4 per-channel weights): mean KL(float || quantized) and
  top-1 agreement on held-out photo crops, beside onnxruntime quantize_static per-channel (int8).

"RTN" is the fast preset without bias correction (max-abs weight scales, round to nearest).

    .venv/bin/python bench/ptq_presets.py [--calib 300] [--eval 300] [--models fashion-cnn,efficientnet-lite0]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from common import machine, ort_quantize_static, run_model, scratch, timed

import irq
from irq import zoo
from irq.pipeline.targets import Target, get_target
from irq.verify.checks import VerifyOptions
from irq.verify.metrics import agreement, kl_divergence

CHECKS = VerifyOptions(measure_latency=False, crash_test=False, layer_error=False)
SETTINGS = (("RTN", "fast", ["bias-correct"]), ("fast", "fast", []), ("accurate", "accurate", []),
            ("max", "max", []))


def _int4_target(min_fan_in: int) -> Target:
    target = get_target("onnx-int8")
    return dataclasses.replace(target, scheme=dataclasses.replace(target.scheme, int4_min_fan_in=min_fan_in))


def fashion(tmp: Path) -> None:
    calib = zoo.calibration_data("fashion-cnn")
    test = zoo.eval_data("fashion-cnn", full=True)
    (tmp / "per-tensor.yaml").write_text("per_channel: false\n")
    print(f"fashion-cnn int4 per-tensor weights, int8 activations: {len(calib)} calibration images, "
          f"{len(test)} test images")
    irq.compile("fashion-cnn", "onnx-int8", tmp / "warm-up", calib=calib, checks=CHECKS)  # imports, caches
    for fan_in, what in ((0, "every layer int4"), (32, "default: filters under 32 weights keep int8")):
        print(f"-- {what}")
        print(f"{'setting':10} {'float':>7} {'int4':>7} {'drop pt':>8} {'agree':>6} {'sec':>6} {'x RTN':>6}")
        base = None
        for label, preset, disabled in SETTINGS:
            report, secs = timed(lambda p=preset, d=disabled, lb=label, f=fan_in: irq.compile(
                "fashion-cnn", _int4_target(f), tmp / f"fashion-{lb}-{f}", calib=calib, eval=test, preset=p,
                weights="int4", recipe=tmp / "per-tensor.yaml", disable_passes=d, checks=CHECKS))
            base = base or secs
            acc = report["accuracy"]
            print(f"{label:10} {acc['float']['top1']:7.4f} {acc['artifact']['top1']:7.4f} "
                  f"{acc['drop_top1_pt']:8.2f} {report['agreement']['top1']:6.3f} {secs:6.1f} {secs / base:6.2f}")


def efficientnet(tmp: Path, n_calib: int, n_eval: int) -> None:
    model = zoo.get("efficientnet-lite0").onnx_path
    calib = zoo.calibration_data("efficientnet-lite0", n_calib)
    held_out = zoo.eval_data("efficientnet-lite0", n_eval)
    ref = run_model(model, held_out)
    print(f"efficientnet-lite0: {len(calib)} calibration crops, {len(held_out)} held-out crops")
    print(f"{'setting':34} {'KL mean':>9} {'top1':>6} {'size':>6} {'sec':>6}")

    def row(name: str, path: Path, secs: float) -> float:
        out = run_model(path, held_out)
        kl = float(kl_divergence(ref, out).mean())
        print(f"{name:34} {kl:9.4f} {agreement(ref, out)['top1']:6.3f} "
              f"{path.stat().st_size / model.stat().st_size:6.3f} {secs:6.1f}")
        return kl

    ort_path = tmp / "ort-per-channel.onnx"
    _, secs = timed(lambda: ort_quantize_static(model, calib, ort_path, per_channel=True))
    ort_kl = row("ort quantize_static per-channel", ort_path, secs)
    for weights in ("int8", "int4"):
        for label, preset, disabled in SETTINGS:
            out = tmp / f"effnet-{weights}-{label}"
            _, secs = timed(lambda o=out, p=preset, d=disabled, w=weights: irq.compile(
                model, "onnx-int8", o, calib=calib, preset=p, weights=w, disable_passes=d, checks=CHECKS))
            kl = row(f"irq w{weights[3:]}a8 {label}", out / "model.onnx", secs)
            if weights == "int8":
                print(f"{'':34} KL {kl / ort_kl:.2f}x onnxruntime per-channel")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--eval", type=int, default=300)
    ap.add_argument("--models", default="fashion-cnn,efficientnet-lite0")
    args = ap.parse_args()
    tmp = scratch()
    print(machine())
    models = args.models.split(",")
    if "fashion-cnn" in models:
        fashion(tmp)
    if "efficientnet-lite0" in models:
        efficientnet(tmp, args.calib, args.eval)


if __name__ == "__main__":
    main()
