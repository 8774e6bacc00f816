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
import time
from pathlib import Path
from typing import Any

from irq.data import DataSet, load_data
from irq.data_check import conform
from irq.errors import BudgetError, InputError
from irq.ir import QModel
from irq.recipe import LayerRule, Recipe, load_recipe, save_recipe
from irq.sensitivity.metrics import Criterion
from irq.sensitivity.mixed import REASON, SearchOptions, SearchResult, copy_artifact, search_mixed_precision
from irq.sensitivity.outputs import write_pareto, write_sensitivity
from irq.targets import Target, get_backend, get_target


def mixed_recipe(result: SearchResult, base: Recipe | None) -> Recipe:
    """A recipe that pins the search's decisions (after any rules of the recipe it started from)."""
    rules = [LayerRule(name=f"^{re.escape(label)}$", precision=result.precision.value)
             for label, d in result.plan.items() if d.reason.startswith(REASON)]
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


def compile_with_budget(model: str | Path | QModel, target: str | Target, out_dir: str | Path, *, criterion: Criterion,
                        calib: str | Path | DataSet | None = None, eval: str | Path | DataSet | None = None,
                        recipe: str | Path | Recipe | None = None, pipeline: str | None = None,
                        options: dict[str, Any] | None = None, search: SearchOptions | None = None,
                        measure_latency: bool = True) -> dict[str, Any]:
    """Compile ``model`` for ``target`` keeping the fewest layers in higher precision to meet ``criterion``.

    Returns the report (with a ``mixed_precision`` section); raises BudgetError after writing
    everything when no assignment met the budget.
    """
    from irq.compiler import import_model
    from irq.report import build_report, write_report
    from irq.verify_report import verification_section

    t0 = time.perf_counter()
    tgt = target if isinstance(target, Target) else get_target(target)
    if options:
        tgt = dataclasses.replace(tgt, options={**tgt.options, **options})
    if eval is None:
        raise InputError("a budget is measured on evaluation data: give --eval")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    float_model = import_model(model)
    float_bytes = float_model.to_bytes()
    calib_data = None if calib is None else conform(load_data(calib), float_model.graph, "calibration")
    eval_data = conform(load_data(eval), float_model.graph, "evaluation")
    rec = load_recipe(recipe) if isinstance(recipe, str | Path) else recipe
    scratch = Path(tempfile.mkdtemp(prefix=".irq-mixed-", dir=out))
    try:
        result = search_mixed_precision(float_model, tgt, calib_data, eval_data, criterion, search, rec, pipeline,
                                        scratch)
        artifact = copy_artifact(result.artifact, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    files = _write_side_files(out, result, rec, tgt)
    backend = get_backend(tgt.backend)
    report = build_report(float_model, float_bytes, result.qmodel, tgt, artifact, [])
    report.update(verification_section(float_bytes, backend.runner(artifact.path, result.qmodel), eval_data,
                                       measure_latency))
    report["mixed_precision"] = _section(result, files)
    chosen = result.figures["chosen"]
    if not result.met:
        report.setdefault("warnings", []).append(
            f"budget missed: no assignment met {criterion.describe()}; saved the best one found "
            f"({criterion.metric} {chosen['metric']:.4g} with {chosen['float_layers']} layers kept at "
            f"{result.precision.value})")
    report["wall_seconds"] = round(time.perf_counter() - t0, 3)
    write_report(out / "report.json", report)
    if not result.met:
        stopped = " (stopped at --max-evals)" if result.figures["stopped_at_max_evals"] else ""
        raise BudgetError(f"model {float_model.name!r} on {tgt.name}: no assignment met {criterion.describe()} "
                          f"after {result.figures['evaluations']} lowered candidates{stopped}; best {criterion.metric} "
                          f"{chosen['metric']:.4g} with {chosen['float_layers']} layers at {result.precision.value}, "
                          f"saved to {artifact.path} and {out / 'report.json'}")
    return report
