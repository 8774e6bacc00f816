"""Task metrics for sensitivity and budgets: built-in ones and ``package.module:function``.

A metric is called as ``fn(float_outputs, artifact_outputs, labels)`` with one array per model
output (samples on axis 0) and returns a float where higher is better. Built-in:

- ``top1``: the artifact's top-1 accuracy minus float's, in points (needs labels; -0.4 is a drop
  of 0.4 points);
- ``agreement``: how often the artifact's top-1 class is float's;
- ``sqnr``: signal-to-quantization-noise ratio of all outputs, in dB;
- ``cosine``: mean per-sample cosine similarity, averaged over outputs;
- ``mse``: mean squared error, negated so that higher is better.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from irq.errors import InputError
from irq.verify.metrics import ErrorStats, accuracy
from irq.verify.metrics import agreement as top1_agreement

MetricFn = Callable[[list[np.ndarray], list[np.ndarray], "np.ndarray | None"], float]


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(len(a), -1)


def _scores(outputs: list[np.ndarray]) -> np.ndarray:
    """The first output shaped as class scores (N, C): a detector's boxes may come before them."""
    for o in outputs:
        if o.ndim == 2 and o.shape[1] >= 2:
            return o
    shapes = ", ".join(str(tuple(o.shape)) for o in outputs)
    raise InputError(f"this metric needs class scores (N, C) among the outputs, got shapes {shapes}; "
                     "name the output with --output")


def top1(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None) -> float:
    """Top-1 accuracy of ``out`` minus that of ``ref``, in points (100 = one sample in one)."""
    if labels is None:
        raise InputError("metric 'top1' needs labelled evaluation data (use agreement or sqnr otherwise)")
    y = np.asarray(labels)
    # irq.verify.metrics' own functions, so that ties (common in int8 outputs) break as in report.json.
    return float(100.0 * (accuracy(_scores(out), y)["top1"] - accuracy(_scores(ref), y)["top1"]))


def agreement(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None) -> float:
    """Fraction of samples whose top-1 class matches float's (as report.json counts it)."""
    return float(top1_agreement(_scores(ref), _scores(out))["top1"])


def sqnr(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None) -> float:
    """10 log10(signal / noise) over every output; -inf for non-finite outputs, inf when exact."""
    stats = ErrorStats()
    for r, o in zip(ref, out, strict=True):
        stats.add(_flat(r), _flat(o))
    return stats.result()["sqnr_db"]


def cosine(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None) -> float:
    """Mean per-sample cosine similarity, averaged over outputs (non-finite outputs score -1)."""
    return float(np.mean([ErrorStats().add(_flat(r), _flat(o)).result()["cosine"]
                          for r, o in zip(ref, out, strict=True)]))


def neg_mse(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None) -> float:
    """Minus the mean squared error over every output element (-inf for non-finite outputs)."""
    stats = ErrorStats()
    for r, o in zip(ref, out, strict=True):
        stats.add(_flat(r), _flat(o))
    return -stats.result()["mse"]


BUILTIN: dict[str, MetricFn] = {"top1": top1, "agreement": agreement, "sqnr": sqnr, "cosine": cosine,
                                "mse": neg_mse}
#: Metrics that move in steps of one sample: too coarse to rank layers on a small subset.
COARSE = frozenset({"top1", "agreement"})


def resolve_metric(spec: str) -> MetricFn:
    """The built-in metric ``spec`` or the function named by ``package.module:function``."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"unknown metric {spec!r}: use {', '.join(BUILTIN)} or package.module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"metric {spec!r} cannot be loaded: {e}") from e
    if not callable(fn):
        raise InputError(f"metric {spec!r} is not callable")
    return fn


def evaluate_metric(spec: str, ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None,
                    output: int | None = None) -> float:
    """Call metric ``spec``; InputError when a user metric fails or returns a non-number.

    ``output`` (an index) restricts a built-in metric to that output; a user metric always gets
    every output, in the model's order.
    """
    fn = resolve_metric(spec)
    if output is not None and spec in BUILTIN:
        ref, out = [ref[output]], [out[output]]
    try:
        value = fn(ref, out, labels)
    except InputError:
        raise
    except Exception as e:  # a user function may raise anything
        raise InputError(f"metric {spec!r} failed: {type(e).__name__}: {e}") from e
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"metric {spec!r} returned {type(value).__name__}, not a number") from e
    return float("-inf") if math.isnan(number) else number  # NaN cannot be ranked: count it as worst


@dataclass(frozen=True)
class Criterion:
    """An accuracy budget: ``metric`` (higher is better) must be at least ``threshold``.

    ``output`` is the index of the output a built-in metric reads (None: every output, or the
    first shaped as class scores for top1/agreement).
    """

    metric: str
    threshold: float
    output: int | None = None

    def __post_init__(self) -> None:
        resolve_metric(self.metric)
        if not math.isfinite(self.threshold):
            raise InputError(f"budget threshold must be finite, got {self.threshold}")

    def met(self, value: float) -> bool:
        """Whether a measured metric value satisfies the budget."""
        return value >= self.threshold

    def describe(self) -> str:
        """The budget in words, for messages and reports."""
        if self.metric == "top1":
            return f"top-1 drop <= {-self.threshold:g} pt vs float"
        return f"{self.metric} >= {self.threshold:g}"

    @staticmethod
    def from_flags(budget: float | None = None, min_agreement: float | None = None,
                   min_metric: float | None = None, metric: str | None = None) -> Criterion | None:
        """The criterion that ``--budget``/``--min-agreement``/``--min-metric`` ask for (None if none)."""
        given = [x is not None for x in (budget, min_agreement, min_metric)]
        if sum(given) > 1:
            raise InputError("give only one of --budget, --min-agreement and --min-metric")
        if budget is not None:
            if budget < 0:
                raise InputError(f"--budget is a maximum top-1 drop in points and cannot be negative ({budget})")
            return Criterion("top1", -float(budget))
        if min_agreement is not None:
            if not 0.0 <= min_agreement <= 1.0:
                raise InputError(f"--min-agreement is a fraction in [0, 1], got {min_agreement}")
            return Criterion("agreement", float(min_agreement))
        if min_metric is not None:
            if not metric:
                raise InputError("--min-metric needs --metric (e.g. sqnr, cosine or package.module:function)")
            return Criterion(metric, float(min_metric))
        return None
