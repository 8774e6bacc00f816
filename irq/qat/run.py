"""``irq qat`` end to end: train, lower the result (and the PTQ baseline), measure, report.

Writes into the output folder: the target's artifact, ``ptq/`` with the post-training
baseline artifact (unless ``baseline=False``), ``loss.png`` and ``report.json``, whose
``qat`` section records the run: epochs, losses, the loss-curve file, and top-1 accuracy of
float, PTQ and QAT, each measured in its own runtime on the evaluation data.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from irq.backends.base import Artifact
from irq.data import DataSet
from irq.errors import BudgetError, InputError
from irq.ir.model import QModel
from irq.pipeline.recipe import Recipe
from irq.pipeline.targets import Target, get_backend
from irq.qat.api import QATResult, qat
from irq.qat.plot import smoothed, write_loss_curve
from irq.qat.prepare import learned_ranges
from irq.qat.train import Loss, QATOptions
from irq.report.model import Report
from irq.verify.checks import VerifyOptions, finalize

_CURVE_POINTS = 200


def _lower(qmodel: QModel, target: Target, out: Path, float_model: QModel, eval_data: DataSet | None,
           checks: VerifyOptions) -> tuple[Artifact, Report]:
    """Lower and verify like any compile (the same stages, the same report sections)."""
    from irq.compiler import Stages

    artifact = get_backend(target.backend).lower(qmodel, target, out)
    return artifact, Stages.lowered(float_model, qmodel, artifact, target, eval_data).report([], None, checks)


def _top1(report: Report, which: str) -> float | None:
    return None if not report.accuracy else float(report.accuracy[which]["top1"])


def _range_changes(result: QATResult) -> dict[str, Any]:
    """How far training moved the activation ranges from the calibrated ones."""
    calibrated = result.prepared.structure.ranges
    learned = learned_ranges(result.module)
    rel = [abs(learned[n].hi - calibrated[n].hi) / max(abs(calibrated[n].hi), 1e-12)
           for n in result.module.range_keys if n in calibrated]
    return {"quantizers": len(result.module.ranges), "tensors": len(result.module.range_keys),
            "learned": any(p.requires_grad for p in result.module.ranges.parameters()),
            "max_rel_change_hi": float(max(rel, default=0.0)), "mean_rel_change_hi": float(np.mean(rel or [0.0]))}


def qat_section(result: QATResult, options: QATOptions, ptq_report: Report | None,
                report: Report, curve: str | None, seconds: float) -> dict[str, Any]:
    """The report's ``qat`` section."""
    log = result.log
    stride = max(len(log.losses) // _CURVE_POINTS, 1)
    float_top1 = _top1(report, "float")
    qat_top1 = _top1(report, "artifact")
    ptq_top1 = _top1(ptq_report, "artifact") if ptq_report else None

    def drop(x: float | None) -> float | None:
        return None if x is None or float_top1 is None else 100 * (float_top1 - x)

    return {
        "target": result.target.name, "weights": result.target.scheme.weight.value,
        "activations": result.target.scheme.activation.value,
        "options": dataclasses.asdict(options), "epochs": len(log.epoch_loss), "steps": log.steps,
        "device": log.device, "train_seconds": round(log.seconds, 2), "total_seconds": round(seconds, 2),
        "loss": {"per_epoch": log.epoch_loss, "first_step": log.losses[0] if log.losses else None,
                 "curve_stride": stride, "curve": smoothed(log.losses, stride)[::stride].tolist()},
        "loss_curve": curve,
        "accuracy": {"float": float_top1, "ptq": ptq_top1, "qat": qat_top1, "ptq_drop_pt": drop(ptq_top1),
                     "qat_drop_pt": drop(qat_top1), "simulated": result.sim_accuracy,
                     "runtime": report.runtime},
        "ptq_artifact": ptq_report.artifact if ptq_report else None,
        "ranges": _range_changes(result),
    }


def qat_compile(model: Any, target: str | Target, out_dir: str | Path, train_data: DataSet | Iterable, *,
                eval_data: DataSet | None = None, calib: Any = None, recipe: str | Path | Recipe | None = None,
                weights: str | None = None, options: QATOptions | None = None, loss: Loss | None = None,
                baseline: bool = True, measure_latency: bool = False,
                max_drop_pt: float | None = None) -> dict[str, Any]:
    """Train, lower, verify and write ``report.json`` under ``out_dir``; return the report.

    ``max_drop_pt``: BudgetError (after everything is written) when the QAT artifact's top-1
    is more than this many points below float on ``eval_data``.
    """
    start = time.perf_counter()
    options = options or QATOptions()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create the output folder ({e.strerror})") from e
    result = qat(model, train_data, target=target, calib=calib, eval_data=eval_data, loss=loss, recipe=recipe,
                 weights=weights, options=options)
    if eval_data is not None:
        from irq.data.conform import conform

        eval_data = conform(eval_data, result.float_model.graph, "evaluation")
    ptq_report = None
    if baseline:
        _, ptq_report = _lower(result.ptq, result.target, out / "ptq", result.float_model, eval_data,
                               VerifyOptions(measure_latency=False, crash_test=False, layer_error=False))
    _, report = _lower(result.qmodel, result.target, out, result.float_model, eval_data,
                       VerifyOptions(measure_latency=measure_latency))
    curve = "loss.png" if write_loss_curve(result.log, out / "loss.png", f"QAT {result.float_model.name} "
                                           f"-> {result.target.name}") else None
    report.qat = qat_section(result, options, ptq_report, report, curve, time.perf_counter() - start)
    report.wall_seconds = round(time.perf_counter() - start, 3)
    qat_drop = report.qat["accuracy"]["qat_drop_pt"]
    if max_drop_pt is not None and qat_drop is not None and qat_drop > max_drop_pt:
        report.warn(f"budget: top-1 drop {qat_drop:.2f} pt > {max_drop_pt} pt")
    content = finalize(report, out / "report.json")
    if max_drop_pt is not None and qat_drop is not None and qat_drop > max_drop_pt:
        raise BudgetError(f"{result.float_model.name} on {result.target.name}: QAT top-1 drop {qat_drop:.2f} pt "
                          f"exceeds {max_drop_pt} pt (report: {out / 'report.json'})")
    return content
