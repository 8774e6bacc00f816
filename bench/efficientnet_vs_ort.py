"""EfficientNet-Lite0 int8: irq vs onnxruntime quantize_static on the same calibration data.

Held-out natural-photo crops (photos never used for calibration). Prints mean KL(float||int8)
of the softmax, top-1 agreement (all crops and crops where float is >= 50 % sure), top-5
agreement and size, for irq's onnx-int8 and ORT's defaults (and ORT per-channel), in one run.

    .venv/bin/python bench/efficientnet_vs_ort.py [--calib 300] [--eval 300] [--method mse]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import machine, ort_quantize_static, run_model, scratch, timed

import irq
from irq import zoo
from irq.verify.metrics import agreement, kl_divergence, softmax


def figures(name: str, ref: np.ndarray, out: np.ndarray, size: int, float_size: int, seconds: float) -> dict:
    confident = softmax(ref).max(axis=1) >= 0.5
    kl = kl_divergence(ref, out)
    agree = agreement(ref, out)
    return {"name": name, "kl": float(kl.mean()), "top1": agree["top1"], "top5": agree["top5"],
            "top1_conf": float(np.mean(ref[confident].argmax(1) == out[confident].argmax(1))),
            "ratio": size / float_size, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--eval", type=int, default=300)
    ap.add_argument("--methods", default="minmax,percentile,mse,entropy")
    args = ap.parse_args()
    model = zoo.get("efficientnet-lite0").onnx_path
    calib = zoo.calibration_data("efficientnet-lite0", args.calib)
    held_out = zoo.eval_data("efficientnet-lite0", args.eval)
    tmp = scratch()
    float_size = model.stat().st_size
    ref = run_model(model, held_out)
    rows = []
    for method in args.methods.split(","):
        (tmp / f"{method}.yaml").write_text(f"calibration: {method}\n")
        report, secs = timed(lambda m=method: irq.compile(model, "onnx-int8", tmp / f"irq-{m}", calib=calib,
                                                         recipe=tmp / f"{m}.yaml"))
        out = run_model(tmp / f"irq-{method}" / "model.onnx", held_out)
        rows.append(figures(f"irq onnx-int8 ({method})", ref, out, report["size_bytes"]["artifact"], float_size, secs))
    for label, kwargs in (("ort quantize_static (defaults)", {}),
                          ("ort quantize_static (per_channel)", {"per_channel": True})):
        path = tmp / f"ort-{len(rows)}.onnx"
        _, secs = timed(lambda p=path, k=kwargs: ort_quantize_static(model, calib, p, **k))
        rows.append(figures(label, ref, run_model(path, held_out), path.stat().st_size, float_size, secs))
    print(f"efficientnet-lite0, {len(calib)} calibration crops, {len(held_out)} held-out crops; {machine()}")
    print(f"{'method':38} {'KL mean':>9} {'top1':>6} {'top1>=.5':>8} {'top5':>6} {'size':>6} {'sec':>6}")
    for r in rows:
        print(f"{r['name']:38} {r['kl']:9.4f} {r['top1']:6.3f} {r['top1_conf']:8.3f} {r['top5']:6.3f} "
              f"{r['ratio']:6.3f} {r['seconds']:6.1f}")
    base = next(r for r in rows if r["name"].endswith("(defaults)"))
    for r in rows:
        if r["name"].startswith("irq"):
            print(f"{r['name']}: KL ratio vs ORT defaults {r['kl'] / base['kl']:.3f}")


if __name__ == "__main__":
    main()
