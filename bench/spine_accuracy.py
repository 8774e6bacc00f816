"""Spine accuracy figures on the real zoo models (the numbers in RESULTS.md, issue "spine").

- fashion-cnn: onnx-int8, onnx-int8-arm and onnx-fp16 top-1 drop on the full 10k
  Fashion-MNIST test set (Debian package dataset-fashion-mnist) and on the shipped 1k subset.
- minilm: onnx-dynamic mean embedding cosine vs fp32 over the held-out sentences, and size.

    .venv/bin/python bench/spine_accuracy.py
"""

from __future__ import annotations

import numpy as np
from common import machine, scratch, timed

import irq
from irq import zoo


def fashion() -> None:
    model = zoo.get("fashion-cnn").onnx_path
    calib = zoo.calibration_data("fashion-cnn")
    sets = {"10k": zoo.eval_data("fashion-cnn", full=True), "1k": zoo.eval_data("fashion-cnn")}
    print(f"fashion-cnn ({machine()}); calibration: {len(calib)} training images")
    print(f"{'target':14} {'set':4} {'float top1':>10} {'artifact':>9} {'drop pt':>8} {'agree':>7} "
          f"{'size':>6} {'sec':>5}")
    for target in ("onnx-int8", "onnx-int8-arm", "onnx-fp16"):
        for name, data in sets.items():
            report, secs = timed(lambda t=target, d=data: irq.compile(model, t, scratch(), calib=calib, eval=d,
                                                                     measure_latency=False))
            acc = report["accuracy"]
            print(f"{target:14} {name:4} {100 * acc['float']['top1']:10.2f} {100 * acc['artifact']['top1']:9.2f} "
                  f"{acc['drop_top1_pt']:8.2f} {100 * report['agreement']['top1']:7.2f} "
                  f"{report['size_bytes']['ratio']:6.3f} {secs:5.1f}")


def minilm() -> None:
    model = zoo.get("minilm").onnx_path
    data = zoo.eval_data("minilm")
    report = irq.compile(model, "onnx-dynamic", scratch(), eval=data)
    emb_cos = report["error"]["cosine"]
    print(f"minilm onnx-dynamic: {len(data)} sentences, mean embedding cosine {emb_cos:.5f}, "
          f"size {report['size_bytes']['artifact'] / 1e6:.1f} MB = {100 * report['size_bytes']['ratio']:.1f}% "
          f"of fp32, latency {report['latency']['artifact']['median_ms']:.2f} ms vs "
          f"{report['latency']['float']['median_ms']:.2f} ms float ({report['latency']['speedup']:.2f}x)")
    assert np.isfinite(emb_cos)


if __name__ == "__main__":
    fashion()
    minilm()
