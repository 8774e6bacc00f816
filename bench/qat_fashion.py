"""QAT on the zoo's fashion-cnn: a setting where PTQ misses a 0.5-point budget, and QAT.

Trains on the 60,000 Fashion-MNIST training images (Debian package dataset-fashion-mnist),
measures on the 10,000 test images, each artifact in its own runtime (onnxruntime, LiteRT),
against float onnxruntime and against PTQ with the same scheme in the same process.

Cases:
  int4pt   onnx-int8 target, int4 weights (scheme) with per-tensor scales (recipe), uint8
           activations: PTQ drops ~1.8 points; QAT with fixed calibrated ranges.
  int4pt-lsq  the same with learned activation ranges (--learn-ranges).
  tflite   tflite-int8 (int8 per-channel weights, int8 activations): PTQ already meets the
           budget; QAT ranges must reach the .tflite unchanged (range fidelity).
  float-ft control: the same epochs of fine-tuning in float, then PTQ (int4pt scheme).
  coreml   coreml-w8a8 from one QAT epoch, measured on the 1,000 shipped test images by the
           Core ML backend's read-back evaluator (Core ML itself predicts only on macOS).
Also: the cost of fake quantization, as training-step time against the same module in float.

Usage: .venv/bin/python bench/qat_fashion.py [--cases int4pt,tflite] [--epochs 3] [--out DIR]
       .venv/bin/python bench/qat_fashion.py --write-npz DIR   (train/test .npz for ``irq qat``)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from irq import zoo
from irq.data import DataSet, save_npz
from irq.frontends import import_model
from irq.pipeline.recipe import recipe_from_dict
from irq.qat import QATOptions, qat_compile
from irq.qat.prepare import prepare, resolve_target
from irq.qat.translate import QDQModule
from irq.zoo import fashion

PER_TENSOR = {"layers": [{"op_type": "Conv|Gemm", "granularity": "per-tensor"}]}
BUDGET_PT = 0.5


def train_set() -> DataSet:
    images, labels = fashion.load_raw("train")
    return DataSet({"input": fashion.preprocess(images)}, labels, "fashion-mnist train (60k)")


def step_time_ratio(calib: DataSet, steps: int = 15) -> dict[str, float]:
    """Seconds per training step (batch 128): fake-quantized module vs the same graph in float."""
    q = import_model("fashion-cnn")
    prepared = prepare(q, resolve_target("onnx-int8"), calib)
    fq = QDQModule(prepared.structure, prepared.calibrated)
    fl = QDQModule(prepared.calibrated, prepared.calibrated)  # no Q/DQ nodes: plain float
    x = torch.from_numpy(np.asarray(calib.inputs["input"][:128]).copy())
    y = torch.from_numpy(np.asarray(calib.labels[:128]))
    times: dict[str, list[float]] = {"float": [], "fake_quant": []}
    for i in range(steps + 3):  # interleaved, so a busy machine slows both alike
        for name, m in (("float", fl), ("fake_quant", fq)):
            t = time.perf_counter()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            if i >= 3:
                times[name].append(time.perf_counter() - t)
    out = {name: float(np.median(ts)) for name, ts in times.items()}
    out["ratio"] = out["fake_quant"] / out["float"]
    return out


def run_case(case: str, args: argparse.Namespace, train: DataSet, test: DataSet, calib: DataSet) -> dict:
    out = Path(args.out) / case
    opts = QATOptions(epochs=args.epochs, lr=args.lr, batch_size=128, seed=0,
                      learn_ranges=case.endswith("lsq"), range_lr=args.range_lr)
    if case.startswith("int4pt"):
        report = qat_compile("fashion-cnn", "onnx-int8", out, train, eval_data=test, calib=calib, weights="int4",
                             recipe=recipe_from_dict(PER_TENSOR), options=opts)
    elif case == "tflite":
        report = qat_compile("fashion-cnn", "tflite-int8", out, train, eval_data=test, calib=calib,
                             options=QATOptions(epochs=1, lr=args.lr, seed=0))
    elif case == "float-ft":
        return float_finetune_case(train, test, calib, opts)
    elif case == "coreml":
        return coreml_case(train, calib, out, args)
    else:
        raise SystemExit(f"unknown case {case}")
    q = report["qat"]
    return {"case": case, "target": q["target"], "float": q["accuracy"]["float"], "ptq": q["accuracy"]["ptq"],
            "qat": q["accuracy"]["qat"], "ptq_drop_pt": q["accuracy"]["ptq_drop_pt"],
            "qat_drop_pt": q["accuracy"]["qat_drop_pt"], "sim": q["accuracy"]["simulated"],
            "epochs": q["epochs"], "train_s": q["train_seconds"], "loss": q["loss"]["per_epoch"],
            "range_fidelity": report.get("artifact_info", {}).get("range_fidelity", {}).get("scale_ratio"),
            "runtime": report.get("runtime"), "report": str(out / "report.json")}


def float_finetune_case(train: DataSet, test: DataSet, calib: DataSet, opts: QATOptions) -> dict:
    """Control: the same fine-tuning in float, then PTQ (recalibrated) with the int4pt scheme.

    Tells whether QAT's gain is more than the extra training it implies.
    """
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.pipeline.prepare import quantize
    from irq.qat.train import train as train_module
    from irq.verify.run import run_dataset

    target, recipe = resolve_target("onnx-int8", "int4"), recipe_from_dict(PER_TENSOR)
    prepared = prepare(import_model("fashion-cnn"), target, calib, recipe)
    module = QDQModule(prepared.calibrated, prepared.calibrated)  # no Q/DQ: plain float training
    log = train_module(module, train, opts)
    tuned = prepared.calibrated.clone()
    for name in module.weight_index:
        tuned.graph.initializers[name].const_value = ir.tensor(module.weight(name).detach().numpy(), name=name)

    def top1(qmodel) -> float:
        out = run_dataset(OnnxRunner(qmodel.to_bytes()), test, 1000)[0]
        return float(np.mean(out.argmax(1) == test.labels))

    ptq = quantize(tuned, target, calib, recipe)
    return {"case": "float-ft", "epochs": len(log.epoch_loss), "train_s": round(log.seconds, 1),
            "float_finetuned": top1(tuned), "ptq_of_finetuned": top1(ptq)}


def coreml_case(train: DataSet, calib: DataSet, out: Path, args: argparse.Namespace) -> dict:
    """coreml-w8a8 from a QAT run; measured by the backend's read-back evaluator on Linux.

    Core ML itself predicts only on macOS; irq's Core ML runner elsewhere evaluates the saved
    ML program with numpy (runtime "coreml-readback"). It runs batch 1, so 1,000 test images.
    """
    report = qat_compile("fashion-cnn", "coreml-w8a8", out, train, eval_data=zoo.eval_data("fashion-cnn"),
                         calib=calib, options=QATOptions(epochs=1, lr=args.lr, seed=0))
    q = report["qat"]
    checks = report.get("artifact_info", {}).get("checks", {})
    return {"case": "coreml", "target": q["target"], "float": q["accuracy"]["float"], "ptq": q["accuracy"]["ptq"],
            "qat": q["accuracy"]["qat"], "ptq_drop_pt": q["accuracy"]["ptq_drop_pt"],
            "qat_drop_pt": q["accuracy"]["qat_drop_pt"], "sim": q["accuracy"]["simulated"], "epochs": q["epochs"],
            "runtime": report.get("runtime"), "activation_scales_exact": checks.get("activation_scales_exact"),
            "weights_bit_exact": checks.get("weights_bit_exact"), "report": str(out / "report.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="int4pt,int4pt-lsq,tflite,coreml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--range-lr", type=float, default=1e-3)
    parser.add_argument("--out", default="/tmp/irq-qat-bench")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--write-npz", help="write fashion_train.npz / fashion_test.npz here and exit")
    args = parser.parse_args()
    if args.write_npz:
        folder = Path(args.write_npz)
        save_npz(folder / "fashion_train.npz", train_set())
        save_npz(folder / "fashion_test.npz", zoo.eval_data("fashion-cnn", full=True))
        return
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    train, test, calib = train_set(), zoo.eval_data("fashion-cnn", full=True), zoo.calibration_data("fashion-cnn")
    print("training step, batch 128:", json.dumps(step_time_ratio(calib)))
    rows = []
    for case in args.cases.split(","):
        start = time.perf_counter()
        row = run_case(case, args, train, test, calib)
        row["wall_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n| case | target | float | PTQ | QAT | PTQ drop | QAT drop | meets {BUDGET_PT} pt |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "qat" not in r:
            continue
        meets = {k: "yes" if r[f"{k}_drop_pt"] <= BUDGET_PT else "no" for k in ("ptq", "qat")}
        print(f"| {r['case']} | {r['target']} | {100 * r['float']:.2f} | {100 * r['ptq']:.2f} | {100 * r['qat']:.2f} "
              f"| {r['ptq_drop_pt']:.2f} | {r['qat_drop_pt']:.2f} | PTQ {meets['ptq']}, QAT {meets['qat']} |")


if __name__ == "__main__":
    main()
