"""``irq bench``: time artifacts against their float model and each other, in one process, taking turns.

Every runner gets the same single-sample feed; the runs are interleaved in blocks (see
:func:`irq.verify.run.interleaved_latency`) so a change in machine load does not favour one
artifact. Ratios are float's median over each artifact's, and the first artifact's median over
each later one's: the comparison the numbers are for, measured in the same run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from irq.backends.base import Runner
from irq.data import DataSet
from irq.errors import InputError
from irq.ir.model import QModel

_NUMPY = {ir.DataType.FLOAT: np.float32, ir.DataType.FLOAT16: np.float16, ir.DataType.DOUBLE: np.float64,
          ir.DataType.INT64: np.int64, ir.DataType.INT32: np.int32, ir.DataType.INT8: np.int8,
          ir.DataType.UINT8: np.uint8, ir.DataType.BOOL: np.bool_}


@dataclass(frozen=True)
class BenchOptions:
    """How long to time: ``runs`` timed single-sample runs per runner, in ``rounds`` blocks after ``warmup``."""

    runs: int = 60
    warmup: int = 5
    rounds: int = 3


def synthetic_feed(graph: ir.Graph) -> DataSet:
    """One sample per input from the graph's declared shapes (symbolic dims: 1): zeros for integer inputs.

    Latency does not depend on the values for the models irq lowers, so when no data is given a
    seeded normal feed stands in (the report says so).
    """
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        if v.shape is None or v.dtype not in _NUMPY:
            raise InputError(f"input {v.name!r} has no static shape or a type bench cannot make up: give --data")
        shape = tuple(d if isinstance(d, int) else 1 for d in v.shape)
        dtype = _NUMPY[v.dtype]
        feed = rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else np.zeros(shape, dtype)
        inputs[v.name or ""] = feed[None]  # one row that is a whole feed
    return DataSet(inputs, source="synthetic (seeded normal)", row_feeds=frozenset(inputs))


def bench(float_model: QModel, runners: list[tuple[str, Runner]], data: DataSet,
          options: BenchOptions = BenchOptions()) -> dict[str, Any]:
    """Time float (onnxruntime) and every named runner on one sample of ``data``; medians, p90s, ratios."""
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.verify.run import interleaved_latency

    every = [("float (onnxruntime)", OnnxRunner(float_model.to_bytes())), *runners]
    times = interleaved_latency([r for _, r in every], data, options.runs, options.warmup, options.rounds)
    rows = []
    for i, ((name, runner), t) in enumerate(zip(every, times, strict=True)):
        row = {"artifact": name, "runtime": runner.runtime, **t,
               "speedup_vs_float": times[0]["median_ms"] / t["median_ms"]}
        if len(every) > 2 and i >= 1:
            row["speedup_vs_first"] = times[1]["median_ms"] / t["median_ms"]
        rows.append(row)
    return {"model": float_model.name, "data": data.source, "threads": os.environ.get("IRQ_THREADS", "default"),
            "runs": options.runs, "warmup": options.warmup, "rounds": options.rounds, "rows": rows,
            "load_average": _load()}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def table(result: dict[str, Any]) -> str:
    """The result as aligned text lines."""
    lines = [f"{result['model']}: {result['runs']} timed runs each ({result['rounds']} rounds, {result['warmup']} "
             f"warm-up), batch 1, data {result['data']}, load {result['load_average']}"]
    first = len(result["rows"]) > 2
    for r in result["rows"]:
        extra = f"  x first {r['speedup_vs_first']:.2f}" if first and "speedup_vs_first" in r else ""
        lines.append(f"  {r['artifact']:40} {r['runtime']:12} median {r['median_ms']:8.3f} ms  p90 {r['p90_ms']:8.3f}"
                     f" ms  x float {r['speedup_vs_float']:.2f}{extra}")
    return "\n".join(lines)
