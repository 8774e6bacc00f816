"""Core ML coreml-int8 on the zoo: size vs the fp32 package, bit-exact weights, and the read-back
program's answers vs the IR under the same scheme (int8 weights, float activations) in
onnxruntime.

    .venv/bin/python bench/coreml_int8.py [--fashion-samples 10000] [--crops 100]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from common import machine, scratch, timed

from irq import zoo
from irq.frontends import import_model
from irq.pipeline.prepare import quantize
from irq.pipeline.targets import get_backend, get_target
from irq.verify.metrics import kl_divergence
from irq.verify.run import run_dataset


def lower(name: str, target_name: str, data):
    target = get_target(target_name)
    # Core ML packages have fixed shapes: dynamic dims (MiniLM's sequence) come from the data.
    shapes = {k: [1, *v.shape[1:]] for k, v in data.inputs.items()}
    target = dataclasses.replace(target, options={**target.options, "input_shapes": shapes})
    qmodel = quantize(import_model(zoo.get(name).onnx_path), target)
    backend = get_backend("coreml")
    artifact, secs = timed(lambda: backend.lower(qmodel, target, scratch()))
    return qmodel, backend, artifact, secs


def compare(name: str, data) -> None:
    from irq.backends.onnx_qdq import OnnxRunner

    q8, backend, a8, secs = lower(name, "coreml-int8", data)
    _, _, a32, _ = lower(name, "coreml-fp32", data)
    checks = a8.info.get("checks", {})
    ir_out = run_dataset(OnnxRunner(q8.to_bytes()), data)[0]
    ml_out = run_dataset(backend.runner(a8.path), data)[0]
    line = (f"{name}: package {a8.size_bytes / 1e6:.2f} MB = {100 * a8.size_bytes / a32.size_bytes:.1f}% of the fp32 "
            f"package ({a32.size_bytes / 1e6:.2f} MB); weights bit-exact: {checks.get('weights_bit_exact')}; "
            f"structure match: {checks.get('structure_match')}; lowering {secs:.1f} s; {len(data)} samples: ")
    if zoo.get(name).task == "classification":
        agree = float(np.mean(ir_out.argmax(1) == ml_out.argmax(1)))
        kl = float(kl_divergence(ir_out, ml_out).mean())
        line += f"top-1 agreement with the IR {agree:.4f}, mean KL(IR || package) {kl:.5f}"
    else:
        cos = np.sum(ir_out * ml_out, 1) / np.linalg.norm(ir_out, axis=1) / np.linalg.norm(ml_out, axis=1)
        line += f"mean cosine with the IR {float(cos.mean()):.5f}"
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fashion-samples", type=int, default=10000)
    ap.add_argument("--crops", type=int, default=100)
    ap.add_argument("--models", default="fashion-cnn,efficientnet-lite0,minilm")
    args = ap.parse_args()
    print(f"coreml-int8 read-back checks; {machine()}")
    models = args.models.split(",")
    if "fashion-cnn" in models:
        fashion = zoo.eval_data("fashion-cnn", full=args.fashion_samples > 1000)
        compare("fashion-cnn", fashion.head(args.fashion_samples))
    if "efficientnet-lite0" in models:
        compare("efficientnet-lite0", zoo.eval_data("efficientnet-lite0", args.crops))
    if "minilm" in models:
        compare("minilm", zoo.eval_data("minilm"))


if __name__ == "__main__":
    main()
