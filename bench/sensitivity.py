"""Sensitivity analysis and mixed precision on the zoo models.

Parts (each prints its figures and writes them, with every artifact, under --out):

  effnet   efficientnet-lite0 on the zoo's photo crops (300 calibration, 300 evaluation):
           one calibration pass (the baseline, timed in this process), then ``irq sensitivity``
           (all layers scored both ways) and its time as a ratio of that pass; then
           ``irq compile -t onnx-int8 --min-agreement A`` (and tflite-int8 with --tflite).
  fashion  fashion-cnn on the full 10k Fashion-MNIST test set with int4 weights and per-tensor
           scales (uint8 activations): plain quantization misses a 0.5 pt top-1 budget; the
           search keeps the fewest layers float to meet it.

Usage: .venv/bin/python bench/sensitivity.py [--parts effnet,fashion] [--tflite] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from pathlib import Path

from irq import zoo
from irq.cli import main as irq_main
from irq.compiler import compile as compile_model
from irq.data import save_npz
from irq.errors import BudgetError
from irq.frontends import import_model
from irq.pipeline.infra import TimingInstrument
from irq.pipeline.recipe import recipe_from_dict
from irq.pipeline.targets import get_target
from irq.quant.spec import QType
from irq.sensitivity.candidates import calibrate_once
from irq.sensitivity.metrics import Criterion


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn, *args, **kwargs):
    t, c = time.perf_counter(), cpu_seconds()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t, cpu_seconds() - c


def cli(argv: list[str]) -> int:
    print("$ irq " + " ".join(argv), flush=True)
    return irq_main(argv)


def effnet(out: Path, tflite: bool, agreement: float, subset: int, confirm: int, budget_runs: bool) -> dict:
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    calib, evald = data / "effnet_calib.npz", data / "effnet_eval.npz"
    save_npz(calib, zoo.calibration_data("efficientnet-lite0"))
    save_npz(evald, zoo.eval_data("efficientnet-lite0"))
    timing = TimingInstrument()
    model = import_model("efficientnet-lite0")
    calib_data = zoo.calibration_data("efficientnet-lite0")
    _, cal_wall, cal_cpu = timed(calibrate_once, model, get_target("onnx-int8"), calib_data, instruments=[timing])
    cal_pass = dict(timing.timings)["calibrate"]
    print(f"baseline: one calibration pass {cal_pass:.1f} s (pipeline to the plan {cal_wall:.1f} s wall, "
          f"{cal_cpu:.1f} s CPU)")
    code, sens_wall, sens_cpu = timed(cli, ["sensitivity", "efficientnet-lite0", "--calib", str(calib), "--eval",
                                            str(evald), "--subset", str(subset), "--confirm", str(confirm),
                                            "-o", str(out / "effnet_sensitivity")])
    sens = json.loads((out / "effnet_sensitivity" / "sensitivity.json").read_text())
    t = sens["timings"]
    figures = {"calibration_pass_s": cal_pass, "calibration_pipeline_s": cal_wall, "calibration_cpu_s": cal_cpu,
               "sensitivity_command_s": sens_wall, "sensitivity_cpu_s": sens_cpu, "sensitivity_timings": t,
               "layers": len(sens["layers"]), "ratio_command_vs_pass": sens_wall / cal_pass,
               "ratio_scoring_vs_pass": t["scoring_s"] / cal_pass,
               "top": [{k: r[k] for k in ("rank", "layer", "op_type", "params", "rank_alone", "rank_all_but_one")}
                       | {"gain_sqnr_db": r.get("gain_full", r["gain"])["sqnr"],
                          "alone_sqnr_db": r.get("alone_full", r["alone"])["sqnr"],
                          "layer_sqnr_db": r["layerwise"].get("sqnr_db")} for r in sens["layers"][:15]]}
    print(f"sensitivity: {figures['layers']} layers, command {sens_wall:.1f} s = "
          f"{figures['ratio_command_vs_pass']:.2f}x one calibration pass; scoring alone {t['scoring_s']:.1f} s = "
          f"{figures['ratio_scoring_vs_pass']:.2f}x")
    targets = ["onnx-int8", *(["tflite-int8"] if tflite else [])] if budget_runs else []
    for target in targets:
        dest = out / f"effnet_{target}_budget"
        argv = ["compile", "efficientnet-lite0", "-t", target, "--calib", str(calib), "--eval", str(evald),
                "--min-agreement", str(agreement), "--no-latency", "--no-crash-test", "--no-layer-error",
                "-o", str(dest)]
        code, wall, _ = timed(cli, argv)
        figures[f"budget_{target}"] = summarize(dest, code, wall)
    return figures


def summarize(dest: Path, code: int, wall: float) -> dict:
    report = json.loads((dest / "report.json").read_text())
    mixed = report["mixed_precision"]
    row = {"exit_code": code, "wall_s": wall, "met": mixed["met"], "criterion": mixed["criterion"],
           "plain": mixed["plain"], "chosen": mixed["chosen"], "kept": [k["name"] for k in mixed["kept_layers"]],
           "evaluations": mixed["evaluations"], "refused": mixed.get("refused_by_backend", 0),
           "size_cost_bytes": mixed["size_cost_bytes"], "float_bytes": report["size_bytes"]["float"],
           "report_agreement": report.get("agreement"), "report_accuracy": report.get("accuracy")}
    print(json.dumps(row, indent=1, default=str))
    return row


def fashion(out: Path, budget: float) -> dict:
    base = get_target("onnx-int8")
    target = dataclasses.replace(base, name="onnx-int8-w4pt",
                                 scheme=dataclasses.replace(base.scheme, weight=QType.INT4))
    recipe = recipe_from_dict({"layers": [{"op_type": ".*", "granularity": "per-tensor"}]})
    dest = out / "fashion_w4pt_budget"
    t = time.perf_counter()
    code = 0
    try:
        compile_model("fashion-cnn", target, dest, criterion=Criterion.from_flags(budget=budget),
                            calib=zoo.calibration_data("fashion-cnn"), eval=zoo.eval_data("fashion-cnn", full=True),
                            recipe=recipe, measure_latency=False)
    except BudgetError as e:
        code = e.exit_code
    return summarize(dest, code, time.perf_counter() - t)


def run() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--parts", default="effnet,fashion")
    p.add_argument("--tflite", action="store_true", help="also the tflite-int8 budget run for efficientnet-lite0")
    p.add_argument("--agreement", type=float, default=0.9, help="efficientnet-lite0 --min-agreement")
    p.add_argument("--budget", type=float, default=0.5, help="fashion-cnn top-1 budget in points")
    p.add_argument("--subset", type=int, default=16, help="irq sensitivity --subset")
    p.add_argument("--confirm", type=int, default=4, help="irq sensitivity --confirm")
    p.add_argument("--no-budget", action="store_true", help="efficientnet-lite0: the sensitivity run only")
    p.add_argument("--out", default="/tmp/irq-bench-sensitivity")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    parts = args.parts.split(",")
    if "fashion" in parts:
        summary["fashion"] = fashion(out, args.budget)
    if "effnet" in parts:
        summary["effnet"] = effnet(out, args.tflite, args.agreement, args.subset, args.confirm, not args.no_budget)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    run()
