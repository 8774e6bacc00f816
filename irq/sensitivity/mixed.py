"""Mixed precision under an accuracy budget, measured on the lowered artifact of the target.

Layers are ranked by sensitivity per byte: the metric gained by keeping a layer in higher
precision while all others are quantized, divided by what keeping it costs in bytes. The search
grows the set of kept layers in that order (doubling, then bisecting to the smallest prefix
that meets the budget), then backtracks: every kept layer whose removal still meets the budget
is dropped. Every assignment is lowered by the target's backend into a scratch folder and run
in the target's runtime; the IR is only used to rank.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irq.backends.base import Artifact
from irq.data import DataSet
from irq.errors import LoweringError, VerificationError
from irq.ir.model import QModel
from irq.pipeline.targets import Target, get_backend
from irq.quant.spec import LayerDecision, Precision
from irq.sensitivity.analysis import SensitivityOptions, SensitivityResult, analyze_sensitivity, metric_names
from irq.sensitivity.candidates import pin, split_pipeline
from irq.sensitivity.metrics import Criterion, evaluate_metric
from irq.sensitivity.units import Unit, overrides_for

REASON = "sensitivity"
CONTINUOUS = frozenset({"sqnr", "cosine", "mse"})


@dataclass(frozen=True)
class SearchOptions:
    """Search limits: artifacts to lower at most, the curve, and the per-layer cost floor."""

    sensitivity: SensitivityOptions = field(default_factory=SensitivityOptions)
    max_evals: int = 20
    full_curve: bool = True
    overhead_bytes: int = 1024  # what any extra float layer costs (rescales, a kernel switch)


@dataclass
class SearchResult:
    """The chosen (or, when nothing met the budget, the best) assignment and its measured figures."""

    qmodel: QModel
    plan: dict[str, LayerDecision]
    kept: list[str]
    met: bool
    figures: dict[str, Any]
    points: list[dict[str, Any]]
    sensitivity: SensitivityResult
    artifact: Artifact
    precision: Precision
    scratch: Path


def extra_bytes(unit: Unit, high: Precision) -> int:
    """Bytes added by keeping ``unit`` at ``high`` instead of int8 weights."""
    per_weight = {Precision.FP32: 3.0, Precision.FP16: 1.0}.get(high, 0.0)  # vs 1 byte per int8 weight
    return int(unit.params * per_weight)


def rank_units(sens: SensitivityResult, metric: str, overhead: int) -> list[tuple[Unit, float]]:
    """Units by gain per byte, most efficient first; units whose gain is noise go last."""
    units = {u.name: u for u in sens.units}
    scored = []
    for row in sens.rows:
        gain = row.get("gain_full", row["gain"])[metric]
        scored.append((units[row["layer"]], float(gain)))
    top = max((g for _, g in scored), default=0.0)
    floor = max(0.02 * top, 1e-9)  # below 2% of the best gain a layer is ranked by gain alone, last

    def key(item: tuple[Unit, float]) -> tuple[int, float]:
        unit, gain = item
        if gain < floor:
            return (1, -gain)
        return (0, -gain / (extra_bytes(unit, sens.high) + overhead))
    return sorted(scored, key=key)


class _Search:
    """Lowers and measures assignments, remembering each one."""

    def __init__(self, base: QModel, target: Target, suffix: str, high: Precision, data: DataSet,
                 ref: list[np.ndarray], criterion: Criterion, scratch: Path, max_evals: int) -> None:
        self.base, self.target, self.suffix, self.high = base, target, suffix, high
        self.data, self.ref, self.criterion, self.scratch = data, ref, criterion, scratch
        self.backend = get_backend(target.backend)
        self.max_evals = max_evals
        self.points: dict[frozenset[str], dict[str, Any]] = {}
        self.models: dict[frozenset[str], tuple[QModel, Artifact]] = {}

    @property
    def budget_left(self) -> bool:
        return len(self.points) < self.max_evals

    def measure(self, kept: Sequence[Unit]) -> dict[str, Any]:
        """Lower the assignment that keeps ``kept`` at high precision, run it and score it."""
        from irq.verify.run import run_dataset

        key = frozenset(u.name for u in kept)
        if key in self.points:
            return self.points[key]
        qmodel = pin(self.base, overrides_for(list(kept), self.high), self.suffix, REASON)
        folder = self.scratch / f"candidate_{len(self.points):03d}"
        folder.mkdir(parents=True)
        point: dict[str, Any] = {"float_layers": len(kept), "layers": sorted(key)}
        try:
            artifact = self.backend.lower(qmodel, self.target, folder)
            outputs = run_dataset(self.backend.runner(artifact.path, qmodel), self.data)
        except (LoweringError, VerificationError) as e:
            if not kept:  # the plain model must lower: nothing to search from otherwise
                raise
            # A backend may refuse an assignment (e.g. a neighbour of a float layer left float):
            # that assignment is infeasible, not the end of the search.
            point.update(error=str(e).splitlines()[0], metric=float("-inf"), met=False, size_bytes=None)
            self.points[key] = point
            return point
        labels = self.data.labels
        point.update(size_bytes=artifact.size_bytes,
                     metric=evaluate_metric(self.criterion.metric, self.ref, outputs, labels, self.criterion.output))
        for extra in metric_names(labels, self.ref, "sqnr", self.criterion.output):
            if extra in ("sqnr", "agreement", "top1") and extra != self.criterion.metric:
                point[extra] = evaluate_metric(extra, self.ref, outputs, labels, self.criterion.output)
        point["met"] = self.criterion.met(point["metric"])
        self.points[key] = point
        self.models[key] = (qmodel, artifact)
        return point

    def grow(self, order: list[Unit]) -> int | None:
        """The smallest prefix of ``order`` that meets the budget (doubling, then bisection)."""
        if self.measure([])["met"]:
            return 0
        lo, k, hi = 0, 1, None
        if self.max_evals - len(self.points) < max(1, len(order) - 1).bit_length() + 1:
            # Doubling would run out of evaluations before it reaches every layer: settle whether
            # any prefix can meet the budget first, then bisect what is left.
            if not self.measure(order)["met"]:
                return None
            hi = len(order)
        while hi is None and self.budget_left:
            k = min(k, len(order))
            if self.measure(order[:k])["met"]:
                hi = k
            elif k == len(order):
                return None
            else:
                lo, k = k, 2 * k
        while hi is not None and hi - lo > 1 and self.budget_left:
            mid = (lo + hi) // 2
            if self.measure(order[:mid])["met"]:
                hi = mid
            else:
                lo = mid
        return hi

    def backtrack(self, kept: list[Unit]) -> list[Unit]:
        """Drop every kept layer (least efficient first) whose removal still meets the budget."""
        for unit in reversed(list(kept)):
            if not self.budget_left or len(kept) <= 1:
                break
            trial = [u for u in kept if u is not unit]
            if self.measure(trial)["met"]:
                kept = trial
        return kept

    def curve(self, order: list[Unit], start: int) -> None:
        """More points of the size/accuracy curve: doubling prefixes up to every layer kept."""
        k = max(start, 1)
        while self.budget_left and k < len(order):
            k = min(2 * k, len(order))
            self.measure(order[:k])


def _tiers(target: Target, choice: str, high: Precision) -> list[tuple[Precision, Target]]:
    """The precisions a kept layer tries, cheapest first, each with the target it lowers for.

    On a static ONNX target under ``--keep auto``, int16 activations (int8 weights: the artifact
    stays small, and NPUs without float run it) come before float. On TFLite full-int8 with int8
    I/O, a last tier gives the model float inputs and outputs: a detector's raw head (boxes in
    pixels beside scores) loses its answer in an int8 output tensor whatever layers stay float.
    """
    static = target.default_precision == Precision.INT8 and "insert-qdq" in target.pipeline \
        and "activations=false" not in target.pipeline
    if choice == "auto" and target.backend == "onnx" and high == Precision.FP32 and static:
        return [(Precision.INT16, target), (Precision.FP32, target)]
    if target.backend == "tflite" and target.options.get("mode") == "int8" and target.options.get("io", "int8") \
            == "int8":
        return [(high, target), (high, dataclasses.replace(target, options={**target.options, "io": "float"}))]
    return [(high, target)]


#: Past this share of the plain int8 artifact's size, float layers cost more than the whole
#: model in TFLite's 16x8 scheme would (which is the size of plain int8).
FLOAT_COST_FOR_16X8 = 0.25


def _sixteen_by_eight(target: Target) -> Target | None:
    """The TFLite int8 target with int16 activations for the whole model (None off TFLite int8)."""
    if target.backend != "tflite" or target.options.get("mode") != "int8" \
            or target.options.get("activations", "int8") != "int8":
        return None
    return dataclasses.replace(target, options={**target.options, "activations": "int16"})


def _float_layers_too_costly(search: _Search, met: bool, kept: Sequence[Unit]) -> bool:
    """True when the int8 search missed, or met only with float layers worth FLOAT_COST_FOR_16X8 of the size."""
    if not met:
        return True
    plain = search.points[frozenset()]["size_bytes"]
    return bool(plain and _size_of(search, kept) > plain * (1 + FLOAT_COST_FOR_16X8))


def _size_of(search: _Search, kept: Sequence[Unit]) -> int:
    """The artifact size of the measured assignment that keeps ``kept``."""
    return int(search.points[frozenset(u.name for u in kept)]["size_bytes"])


def _io(target: Target) -> dict[str, str]:
    """The tier's TFLite I/O type (and 16x8 activations), for the report (nothing on other backends)."""
    if target.options.get("mode") != "int8":
        return {}
    whole = {"activations": "whole model"} if target.options.get("activations") == "int16" else {}
    return {"io": str(target.options.get("io", "int8")), **whole}


def search_mixed_precision(float_qmodel: QModel, target: Target, calib: DataSet | None, data: DataSet,
                           criterion: Criterion, options: SearchOptions | None = None, recipe: Any = None,
                           pipeline: str | None = None, scratch: Path | None = None) -> SearchResult:
    """Keep the fewest, cheapest layers in higher precision so that ``target``'s artifact meets ``criterion``.

    Returns the chosen assignment (``met`` True) or the best one measured (``met`` False); the
    caller decides whether a missed budget is an error. Artifacts are lowered under ``scratch``
    (a new temporary folder when None, left for the caller to remove: the result points into it).
    """
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.verify.run import run_dataset

    opts = options or SearchOptions()
    # Layers are ranked on a small subset: a step-wise metric (top-1, a task metric counting
    # samples) ties there, so only the continuous built-ins rank by themselves; the rest by SQNR.
    rank_metric = criterion.metric if criterion.metric in CONTINUOUS else "sqnr"
    sens_opts = dataclasses.replace(opts.sensitivity, metric=rank_metric, output=criterion.output)
    sens = analyze_sensitivity(float_qmodel, target, calib, data, sens_opts, recipe, pipeline)
    ranked = rank_units(sens, rank_metric, opts.overhead_bytes)
    order = [u for u, _ in ranked]
    _, suffix = split_pipeline(target, pipeline)
    scratch = Path(tempfile.mkdtemp(prefix="irq-mixed-")) if scratch is None else scratch
    ref = run_dataset(OnnxRunner(float_qmodel.to_bytes()), data)
    tiers = _tiers(target, opts.sensitivity.high, sens.high)
    tried: list[dict[str, Any]] = []
    for i, (high, tier_target) in enumerate(tiers):
        left = opts.max_evals - sum(t["evaluations"] for t in tried)
        search = _Search(sens.base, tier_target, suffix, high, data, ref, criterion, scratch / f"{i}_{high.value}",
                         left)
        last = i == len(tiers) - 1
        # a cheaper precision first proves it can meet the budget at all (every ranked layer kept)
        feasible = last or search.measure([])["met"] or search.measure(order)["met"]
        k = search.grow(order) if feasible else None
        if k is not None or last or not search.budget_left:
            break
        # not even every ranked layer at this precision meets the budget: try the next one
        tried.append({"precision": high.value, **_io(tier_target), "met": False, "evaluations": len(search.points),
                      "best_metric": max((p["metric"] for p in search.points.values()), default=None)})
    kept = search.backtrack(order[:k]) if k else []
    if opts.full_curve:
        search.curve(order, k or 0)
    sixteen, plain_int8 = _sixteen_by_eight(target), None
    if sixteen is not None and _float_layers_too_costly(search, k is not None, kept):
        # TFLite cannot mix int8 and int16 activations per layer: the alternative to many float
        # layers is the whole model in 16x8 (int8 weights: the size of plain int8).
        left = opts.max_evals - sum(t["evaluations"] for t in tried) - len(search.points)
        whole = _Search(sens.base, sixteen, suffix, Precision.INT16, data, ref, criterion, scratch / "16x8", left)
        try:
            point = whole.measure([])
        except (LoweringError, VerificationError) as e:  # an op without a 16x8 kernel
            point = {"met": False, "metric": None, "error": str(e).splitlines()[0]}
        if point["met"] and (k is None or point["size_bytes"] < _size_of(search, kept)):
            tried.append({"precision": search.high.value, **_io(search.target), "met": k is not None,
                          "evaluations": len(search.points),
                          "best_metric": max((p["metric"] for p in search.points.values()), default=None)})
            plain_int8, search, k, kept = search.points[frozenset()], whole, 0, []
        else:  # the int8 tier stands (reported last, below); 16x8 was tried
            tried.append({"precision": "int16", "activations": "whole model", "met": bool(point["met"]),
                          "evaluations": 1, "best_metric": point.get("metric")})
    points = list(search.points.values())
    met = k is not None
    if met:
        key = frozenset(u.name for u in kept)
    else:  # the best measured: highest metric, then smallest
        best = max((p for p in points if "error" not in p), key=lambda p: (p["metric"], -p["size_bytes"]))
        key = frozenset(best["layers"])
    qmodel, artifact = search.models[key]
    chosen = search.points[key]
    plain = plain_int8 if plain_int8 is not None else search.points[frozenset()]
    figures = {"criterion": criterion.describe(), "metric": criterion.metric, "threshold": criterion.threshold,
               "ranking_metric": rank_metric, "plain": plain, "chosen": chosen,
               "evaluations": len(points) + sum(t["evaluations"] for t in tried),
               "refused_by_backend": sum("error" in p for p in points),
               "stopped_at_max_evals": not met and not search.budget_left,
               "size_cost_bytes": chosen["size_bytes"] - plain["size_bytes"],
               "precision_tried": [*tried, {"precision": search.high.value, **_io(search.target), "met": met,
                                            "evaluations": len(points)}]}
    for p in points:
        p["chosen"] = frozenset(p["layers"]) == key
    return SearchResult(qmodel, dict(qmodel.plan), sorted(key, key=[u.name for u in order].index), met, figures,
                        points, sens, artifact, search.high, scratch)


def copy_artifact(artifact: Artifact, out_dir: Path) -> Artifact:
    """The scratch artifact copied (file or package folder) into ``out_dir``, with its side files.

    A side file is named after the artifact (``model.tflite.json``, the TFLite I/O layouts):
    without it a runner has to guess each input's layout.
    """
    dest = out_dir / artifact.path.name
    if dest.is_dir():
        shutil.rmtree(dest)
    if artifact.path.is_dir():
        shutil.copytree(artifact.path, dest)
    else:
        shutil.copy2(artifact.path, dest)
    for side in artifact.path.parent.glob(f"{artifact.path.name}.*"):
        if side.is_file():
            shutil.copy2(side, out_dir / side.name)
    return Artifact(dest, artifact.target, artifact.runtime, dict(artifact.info))
