"""Per-layer sensitivity: quantize one layer alone, and all layers but one, from one calibration.

The run calibrates once, scores every unit both ways on an evenly spread subset of the
evaluation data in parallel workers, re-scores the top ``confirm`` units on a larger spread set
(``confirm_samples``, or all of it; their final order comes from that set), and measures every
unit's output error in the fully quantized model in one side-by-side pass. Candidates run in
groups, each only downstream of the layer it changes (``irq.sensitivity.downstream``).
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irq.data import DataSet, StoredData
from irq.errors import InputError
from irq.ir.model import QModel
from irq.pipeline.infra import TimingInstrument
from irq.pipeline.targets import Target
from irq.quant.spec import Precision
from irq.sensitivity.candidates import (
    Evaluator,
    Task,
    Workspace,
    as_group,
    as_task,
    calibrate_once,
    proxy_suffix,
    split_pipeline,
)
from irq.sensitivity.metrics import BUILTIN, COARSE, evaluate_metric
from irq.sensitivity.units import Unit, find_units, overrides_for

MODES = ("alone", "all_but_one")


@dataclass(frozen=True)
class SensitivityOptions:
    """How to score: ranking metric, subset size, how many top units to confirm, workers."""

    metric: str = "sqnr"
    subset: int = 16  # on efficientnet-lite0 its top 10 held ranks 1-10 and 14 of the whole-set ranking
    confirm: int = 4
    workers: int = 2
    high: str = "auto"
    layerwise: bool = True
    output: int | None = None  # the output built-in metrics read (see Criterion.output)
    #: Run each candidate only downstream of the layer it changes (irq.sensitivity.downstream).
    downstream: bool = True
    #: Evaluation samples (evenly spread; 0: all) the top units are re-scored on: the cost stays
    #: bounded however large the evaluation set (on EfficientNet-Lite0 the re-scoring of 4 units on
    #: 300 samples was 40 % of the run)
    confirm_samples: int = 128

    def __post_init__(self) -> None:
        if self.subset < 0 or self.confirm < 0 or self.confirm_samples < 0 or self.workers < 1:
            raise InputError("subset, confirm and confirm-samples must be >= 0 and workers >= 1")
        if self.high not in ("auto", "fp32", "fp16", "int16"):
            raise InputError(f"--keep must be auto, fp32, fp16 or int16, not {self.high!r}")


@dataclass
class SensitivityResult:
    """Scores per unit (``rows``, best-ranked first), the planned model and how long it took."""

    model: str
    target: str
    metric: str
    high: Precision
    units: list[Unit]
    rows: list[dict[str, Any]]
    baseline: dict[str, Any]
    timings: dict[str, float]
    base: QModel
    samples: dict[str, int] = field(default_factory=dict)


def high_precision(target: Target, choice: str = "auto") -> Precision:
    """The precision a unit keeps when left out of quantization: fp16 on Core ML, else fp32."""
    if choice == "int16":
        if target.backend != "onnx":
            hint = (" (TFLite cannot mix them with int8: use -t tflite-int16x8 for the whole model, or --keep auto, "
                    "which tries it)" if target.backend == "tflite" else "")
            raise InputError(f"int16 activations per layer are only supported for ONNX targets, not {target.name}"
                             + hint)
        return Precision.INT16
    if choice == "fp16" or (choice == "auto" and target.backend == "coreml"):
        return Precision.FP16
    return Precision.FP32


def metric_names(labels: np.ndarray | None, ref: list[np.ndarray], extra: str, output: int | None = None) -> list[str]:
    """The metrics that apply: top1 needs labels, top1/agreement need class scores."""
    read = ref if output is None else [ref[output]]
    classifier = any(r.ndim == 2 and r.shape[1] > 1 for r in read)
    names = [m for m in BUILTIN if (m not in COARSE or classifier) and (m != "top1" or labels is not None)]
    return names if extra in names else [*names, extra]


def score(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None, names: list[str],
          output: int | None = None) -> dict:
    """Every metric in ``names`` for one candidate (built-in ones on ``output`` alone when given)."""
    return {m: evaluate_metric(m, ref, out, labels, output) for m in names}


def _spread(n: int, k: int) -> np.ndarray:
    """``k`` indices spread evenly over ``range(n)`` (data sets are often sorted by source)."""
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def _rank(rows: list[dict], mode: str, metric: str, descending: bool) -> list[int]:
    """Positions of ``rows`` sorted most-sensitive first; sqnr breaks ties of coarse metrics."""
    def key(i: int) -> tuple[float, float]:
        s = rows[i][mode]
        return (-s[metric], -s["sqnr"]) if descending else (s[metric], s["sqnr"])
    return sorted(range(len(rows)), key=key)


def _assign_ranks(rows: list[dict], metric: str) -> list[dict]:
    """Rank rows both ways and combined (mean of the two ranks); return them in combined order."""
    for pos, i in enumerate(_rank(rows, "alone", metric, descending=False)):
        rows[i]["rank_alone"] = pos + 1
    for pos, i in enumerate(_rank(rows, "all_but_one", metric, descending=True)):
        rows[i]["rank_all_but_one"] = pos + 1
    order = sorted(rows, key=lambda r: (r["rank_alone"] + r["rank_all_but_one"], r["rank_all_but_one"]))
    return order


class _Member:
    """One candidate's outputs inside a group task's result."""

    def __init__(self, future: Future, index: int) -> None:
        self.future, self.index = future, index

    def result(self) -> Any:
        return self.future.result()[self.index]


#: Candidates per group task: each holds its members' sessions until the group is done.
GROUP = 12


def _chunks(items: list, workers: int) -> list[list]:
    """``items`` in consecutive chunks, at least two per worker, at most ``GROUP`` long."""
    size = max(1, min(GROUP, -(-len(items) // (2 * workers))))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _collect(rows: list[dict], futures: dict, ref: list[np.ndarray], labels: np.ndarray | None,
             names: list[str], baseline: dict[str, float], suffix: str = "", output: int | None = None) -> None:
    for row in rows:
        for mode in MODES:
            row[mode + suffix] = score(ref, futures[(row["layer"], mode)].result(), labels, names, output)
        row["gain" + suffix] = {m: row["all_but_one" + suffix][m] - baseline[m] for m in names}


class _Run:
    """The state of one sensitivity run."""

    def __init__(self, float_qmodel: QModel, target: Target, options: SensitivityOptions) -> None:
        self.float_qmodel, self.target, self.options = float_qmodel, target, options
        self.high = high_precision(target, options.high)
        self.every_high: dict[str, Precision] = {}

    def units_and_overrides(self, base: QModel) -> list[tuple[Unit, dict, dict]]:
        units = find_units(base)
        if not units:
            raise InputError(f"model {base.name!r}: no layer is quantized for target {self.target.name}")
        every = overrides_for(units, self.high)
        self.every_high = every  # the reference of the "alone" candidates: every unit kept high
        out = []
        for u in units:
            alone = {k: v for k, v in every.items() if k not in u.members}
            out.append((u, alone, overrides_for([u], self.high)))
        return out

    def run(self, calib: DataSet | None, data: DataSet, recipe: Any, pipeline: str | None) -> SensitivityResult:
        opts, t0 = self.options, time.perf_counter()
        timing = TimingInstrument()
        base = calibrate_once(self.float_qmodel, self.target, calib, recipe, pipeline, [timing])
        t_cal = time.perf_counter() - t0
        _, suffix = split_pipeline(self.target, pipeline)
        plan = self.units_and_overrides(base)
        idx = _spread(len(data), opts.subset) if 0 < opts.subset < len(data) else np.arange(len(data))
        sub = data.take(idx)
        if 0 < opts.confirm_samples < len(data):
            data = data.take(_spread(len(data), opts.confirm_samples))
        with tempfile.TemporaryDirectory(prefix="irq-sensitivity-") as tmp:
            stored = {"subset": StoredData.save(Path(tmp) / "subset.npz", sub),
                      "full": StoredData.save(Path(tmp) / "full.npz", data)}
            space = Workspace.create(base, self.float_qmodel.to_bytes(), proxy_suffix(suffix), stored,
                                     1 if opts.workers > 1 else None)
            with Evaluator(space, opts.workers) as ev:
                result = self._score(ev, base, plan, sub, data, len(idx) < len(data))
        result.timings.update(calibration_s=t_cal, calibrate_pass_s=dict(timing.timings).get("calibrate", t_cal),
                              total_s=time.perf_counter() - t0)
        result.timings["scoring_s"] = result.timings["total_s"] - t_cal
        return result

    def _score(self, ev: Evaluator, base: QModel, plan: list, sub: DataSet, data: DataSet,
               confirm: bool) -> SensitivityResult:
        opts = self.options
        all_q: dict = {}
        f_sub = ev.submit(Task("subset"))
        q_sub = ev.submit(as_task(all_q, "subset"))
        futures = self._submit(ev, [(u.name, alone, abo) for u, alone, abo in plan], "subset")
        units = [u for u, _, _ in plan]
        lw = ev.submit(Task("subset", (), tuple(units))) if opts.layerwise else None
        f_full = ev.submit(Task("full")) if confirm and opts.confirm else None
        q_full = ev.submit(as_task(all_q, "full")) if f_full is not None else None  # early: no idle barrier
        ref = f_sub.result()
        names = metric_names(sub.labels, ref, opts.metric, opts.output)
        baseline = {"subset": score(ref, q_sub.result(), sub.labels, names, opts.output)}
        rows = [{"layer": u.name, "op_type": u.op_type, "params": u.params, "bytes": u.bytes,
                 "members": list(u.members), "confirmed": False} for u in units]
        _collect(rows, futures, ref, sub.labels, names, baseline["subset"], output=opts.output)
        layer = lw.result() if lw is not None else {}
        for row in rows:
            row["layerwise"] = {k: v for k, v in layer.get(row["layer"], {}).items() if not k.endswith("_value")}
        order = _assign_ranks(rows, opts.metric)
        if f_full is not None:
            order = self._confirm(ev, order, plan, (f_full, q_full), data, names, baseline)
        for pos, row in enumerate(order):
            row["rank"] = pos + 1
        return SensitivityResult(self.float_qmodel.name, self.target.name, opts.metric, self.high, units, order,
                                 baseline, {}, base, {"subset": len(sub), "full": len(data)})

    def _submit(self, ev: Evaluator, plan: list, data: str) -> dict[tuple[str, str], Any]:
        """Both modes' candidates of ``plan`` ((unit name, alone, all-but-one) rows) on ``data``."""
        futures: dict[tuple[str, str], Any] = {}
        if not self.options.downstream:
            for name, alone, abo in plan:
                futures[(name, "alone")] = ev.submit(as_task(alone, data, isolate=False))
                futures[(name, "all_but_one")] = ev.submit(as_task(abo, data))
            return futures
        references = {"alone": (self.every_high, False), "all_but_one": ({}, True)}
        for column, mode in ((1, "alone"), (2, "all_but_one")):
            reference, isolate = references[mode]
            for chunk in _chunks(plan, self.options.workers):
                group = ev.submit(as_group([row[column] for row in chunk], reference, data, isolate))
                for k, row in enumerate(chunk):
                    futures[(row[0], mode)] = _Member(group, k)
        return futures

    def _confirm(self, ev: Evaluator, order: list[dict], plan: list, full: tuple, data: DataSet, names: list[str],
                 baseline: dict) -> list[dict]:
        """Re-score the top units on the whole set; their order among themselves comes from it."""
        top = order[:self.options.confirm]
        by_name = {u.name: (alone, abo) for u, alone, abo in plan}
        f_full, q_full = full
        futures = self._submit(ev, [(row["layer"], *by_name[row["layer"]]) for row in top], "full")
        ref = f_full.result()
        baseline["full"] = score(ref, q_full.result(), data.labels, names, self.options.output)
        _collect(top, futures, ref, data.labels, names, baseline["full"], "_full", self.options.output)
        by_layer = {r["layer"]: r for r in top}
        subset_rank = {r["layer"]: i + 1 for i, r in enumerate(top)}
        view = [{"layer": r["layer"], "alone": r["alone_full"], "all_but_one": r["all_but_one_full"]} for r in top]
        reordered = [by_layer[v["layer"]] for v in _assign_ranks(view, self.options.metric)]
        for r in reordered:
            r["confirmed"] = True
            r["subset_rank"] = subset_rank[r["layer"]]
        return reordered + order[len(top):]


def analyze_sensitivity(float_qmodel: QModel, target: Target, calib: DataSet | None, data: DataSet,
                        options: SensitivityOptions | None = None, recipe: Any = None,
                        pipeline: str | None = None) -> SensitivityResult:
    """Score every layer of ``float_qmodel`` for ``target`` on ``data`` (see the module docstring)."""
    return _Run(float_qmodel, target, options or SensitivityOptions()).run(calib, data, recipe, pipeline)
