"""``irq compile`` under an accuracy budget: search, then save the artifact, report, recipe and curve.

Everything is written before a missed budget is reported: the best assignment found, its
report.json (with the measured figures and a warning), ``mixed_recipe.yaml``, the Pareto curve
and the sensitivity tables. Only then does ``BudgetError`` (exit code 3) say the budget was missed.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from irq.backends.base import Artifact
from irq.data import DataSet
from irq.errors import BudgetError, InputError
from irq.ir.model import QModel
from irq.pipeline.recipe import LayerRule, Recipe, save_recipe
from irq.pipeline.targets import Target
from irq.quant.spec import DecisionSource, Precision
from irq.report.model import Report
from irq.sensitivity.metrics import Criterion
from irq.sensitivity.mixed import SearchOptions, SearchResult, copy_artifact, search_mixed_precision
from irq.sensitivity.outputs import write_pareto, write_sensitivity


def mixed_recipe(result: SearchResult, base: Recipe | None) -> Recipe:
    """A recipe that pins the search's decisions (after any rules of the recipe it started from)."""
    rules = [LayerRule(name=f"^{re.escape(label)}$", precision=result.precision.value)
             for label, d in result.plan.items() if d.source is DecisionSource.SENSITIVITY]
    if base is None:
        return Recipe(tuple(rules), source="mixed precision search")
    return dataclasses.replace(base, layers=(*base.layers, *rules), source="mixed precision search")


def _section(result: SearchResult, files: dict[str, str]) -> dict[str, Any]:
    units = {u.name: u for u in result.sensitivity.units}
    return {"met": result.met, **result.figures, "keep_precision": result.precision.value,
            "kept_layers": [{"name": n, "op_type": units[n].op_type, "params": units[n].params,
                             "members": list(units[n].members)} for n in result.kept],
            "sensitivity_timings": {k: round(v, 3) for k, v in result.sensitivity.timings.items()},
            "files": files}


def _write_side_files(out: Path, result: SearchResult, recipe: Recipe | None, target: Target) -> dict[str, str]:
    save_recipe(out / "mixed_recipe.yaml", mixed_recipe(result, recipe))
    files = {"recipe": str(out / "mixed_recipe.yaml")}
    pareto = write_pareto(out, result.points, result.figures["metric"], result.figures["threshold"],
                          f"{result.sensitivity.model} on {target.name}")
    files.update({f"pareto_{k}": str(v) for k, v in pareto.items()})
    sens = write_sensitivity(out, result.sensitivity)
    files.update({f"sensitivity_{k}": str(v) for k, v in sens.items()})
    return files


def search_stage(prepared: QModel, target: Target, calib: DataSet | None, data: DataSet | None,
                 criterion: Criterion, search: SearchOptions | None, recipe: Recipe | None, pipeline: str | None,
                 out: Path) -> tuple[SearchResult, Artifact]:
    """The compile driver's quantize-and-lower stage under a budget: search, then copy the chosen artifact.

    ``prepared`` is the float model with its inputs already frozen and fixed (what every candidate
    starts from); candidates are lowered in a scratch folder under ``out`` that is removed here.
    """
    if data is None:
        raise InputError("a budget is measured on evaluation data: give --eval")
    scratch = Path(tempfile.mkdtemp(prefix=".irq-mixed-", dir=out))
    try:
        result = search_mixed_precision(prepared, target, calib, data, criterion, search, recipe, pipeline, scratch)
        return result, copy_artifact(result.artifact, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def add_budget_section(report: Report, result: SearchResult, recipe: Recipe | None, target: Target,
                       out: Path, criterion: Criterion) -> None:
    """Write the side files (recipe, curve, sensitivity) and put the search's section into ``report``."""
    files = _write_side_files(out, result, recipe, target)
    report.mixed_precision = _section(result, files)
    chosen = result.figures["chosen"]
    if not result.met:
        report.warn(
            f"budget missed: no assignment met {criterion.describe()}; saved the best one found "
            f"({criterion.metric} {chosen['metric']:.4g} with {chosen['float_layers']} layers kept at "
            f"{result.precision.value})")
    if result.precision == Precision.INT16 and result.kept and target.backend == "onnx":
        report.warn(f"int16-speed: {len(result.kept)} layers kept at int16 run as float between extra Q/DQ in "
                    "onnxruntime's CPU kernels (MiniLM: 8x slower than float); for CPU speed search with --keep "
                    "fp32, int16 is for NPUs that run A16W8")
    if result.precision == Precision.INT16 and target.backend == "tflite":
        report.warn("int16-speed: the budget was met by TFLite's 16x8 scheme for the whole model (int8 missed "
                    "it, or met it only with float layers that cost more size); XNNPACK has no 16x8 kernels, "
                    "so on a phone CPU it runs on LiteRT's reference kernels (fashion-cnn: 30x slower than float "
                    "on x86); it is for NPUs and DSPs that run A16W8")


def missed(result: SearchResult, model: str, target: Target, criterion: Criterion, out: Path) -> BudgetError:
    """The error a missed budget ends in, once everything is written."""
    chosen = result.figures["chosen"]
    stopped = " (stopped at --max-evals)" if result.figures["stopped_at_max_evals"] else ""
    return BudgetError(f"model {model!r} on {target.name}: no assignment met {criterion.describe()} "
                       f"after {result.figures['evaluations']} lowered candidates{stopped}; best {criterion.metric} "
                       f"{chosen['metric']:.4g} with {chosen['float_layers']} layers at {result.precision.value}, "
                       f"saved to {out / result.artifact.path.name} and {out / 'report.json'}")
