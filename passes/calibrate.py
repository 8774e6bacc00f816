"""Calibration: run the float model on the calibration set and choose a range per activation.

Streaming, one sweep: each tensor keeps its exact min/max and (for the histogram methods) a
fixed-size histogram whose range doubles as needed (irq/quant/histogram.py), fed by a strided
sample of each batch's values. The extremes and the samples are computed inside onnxruntime
(irq.quant.probes.add_range_probe), so neither the session nor this pass holds whole
activations: memory does not grow with the number of samples or the size of the activations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from irq.data import DataSet
from irq.errors import DataError, PassError
from irq.ir.findings import CalibrationSummary
from irq.ir.model import QModel, float_value_names
from irq.ir.ort import make_session
from irq.pipeline.infra import Pass, PassResult
from irq.progress import progress
from irq.quant.histogram import GrowingHistogram
from irq.quant.probes import RANGE_SAMPLE, add_channel_mean, add_range_probe
from irq.quant.ranges import CALIBRATION_METHODS, entropy_range, mse_range, percentile_range
from irq.quant.spec import TensorRange

METHODS = CALIBRATION_METHODS
_NO_SAMPLE = np.zeros(0, np.float32)
#: Samples whose values go into one histogram update (one numpy call per tensor, not per batch).
_FLUSH_SAMPLES = 16


def _layer_inputs(graph: ir.Graph) -> list[str]:
    """The activations that Conv and Gemm layers with constant weights read (bias-correct's layers)."""
    names = []
    for node in graph:
        if node.op_type in ("Conv", "Gemm") and len(node.inputs) > 1 and node.inputs[0] is not None \
                and node.inputs[0].const_value is None and node.inputs[1] is not None \
                and node.inputs[1].const_value is not None and node.inputs[0].dtype == ir.DataType.FLOAT:
            names.append(node.inputs[0].name or "")
    return list(dict.fromkeys(names))


class _Means:
    """Running sums of each layer input over the samples (a tensor whose shape changes is dropped)."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.rows = names, 0
        self.sums: dict[str, np.ndarray | None] = dict.fromkeys(names)
        self.dropped: set[str] = set()

    def add(self, rows: int, means: list[np.ndarray]) -> None:
        if not means:  # past the samples the means are taken over
            return
        self.rows += rows
        for name, m in zip(self.names, means, strict=True):
            s = self.sums[name]
            if name in self.dropped:
                continue
            if s is None:
                self.sums[name] = m.astype(np.float64) * rows
            elif s.shape != m.shape:  # dynamic dims: no mean image; bias-correct measures this one itself
                self.dropped.add(name)
            else:
                s += m.astype(np.float64) * rows

    def result(self) -> dict[str, np.ndarray]:
        return {n: (s / max(self.rows, 1)).astype(np.float32) for n, s in self.sums.items()
                if s is not None and n not in self.dropped}


def _range_session(qmodel: QModel, names: list[str], per_batch: int,
                   layer_inputs: list[str]) -> tuple[Any, list[list[int]]]:
    """A session of the float model whose outputs are each tensor's range probe, then the layer-input means.

    Returns the session and, per tensor, the indices of its min, max (and sample) outputs.
    """
    proto = qmodel.to_proto()
    del proto.graph.output[:]
    wanted = [add_range_probe(proto, name, f"irq_range_{i}", per_batch) for i, name in enumerate(names)]
    for i, name in enumerate(layer_inputs):
        add_channel_mean(proto, name, f"irq_input_mean_{i}", [0])
    payload = proto.SerializeToString()
    del proto  # the session holds the weights from here on: no second and third copy through the sweep
    session = make_session(payload)
    at = {o.name: i for i, o in enumerate(session.get_outputs())}
    return session, [[at[n] for n in w] for w in wanted]


def _flush(stats: list[GrowingHistogram], pending: list[list[tuple[float, float, np.ndarray]]],
           use_hist: bool) -> None:
    """Add the pending batches' extremes (and samples) to each tensor's statistics."""
    if not pending:
        return
    for t, s in enumerate(stats):
        lo = float(np.minimum.reduce([b[t][0] for b in pending]))  # NaN propagates: add() then uses the samples
        hi = float(np.maximum.reduce([b[t][1] for b in pending]))
        if use_hist:
            s.add(np.concatenate([b[t][2] for b in pending]), lo, hi)
        else:
            s.lo, s.hi = min(s.lo, lo), max(s.hi, hi)


def _observed_values(graph: ir.Graph) -> list[str]:
    """Float activations worth a range: graph inputs and node outputs that are not constants."""
    return list(dict.fromkeys(float_value_names(graph)))


@dataclass(frozen=True)
class Calibrate(Pass):
    """Annotate ``qmodel.ranges`` from ``qmodel.calibration``.

    Options: ``method`` (minmax, percentile, entropy, mse), ``percentile`` (for percentile),
    ``bits`` (the activation width the range is optimised for), ``batch-size`` (default 1), ``samples``
    (0: all), ``memory-mb`` (the budget for one batch inside onnxruntime, taken as four of its
    largest activations; the batch shrinks to fit), ``input-means`` (also keep each Conv/Gemm
    input's mean over the first that many samples, from the same sweep, for bias-correct).
    """

    name = "calibrate"
    rewrites_graph = False
    reads_calibration_data = True
    method: str = ""
    percentile: float = 99.99
    bits: int = 8
    # One sample a run: onnxruntime's buffers for a larger batch cost more memory than the batch
    # saves time (EfficientNet-Lite0, 300 samples: 8.7 s / 365 MB at 1, 10.5 s / 1.9 GB at 16).
    batch_size: int = 1
    samples: int = 0
    memory_mb: int = 256
    input_means: int = 0

    def __post_init__(self) -> None:
        if self.method and self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r} (use {', '.join(METHODS)})")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError("percentile must be in (50, 100]")

    def run(self, qmodel: QModel) -> PassResult:
        """Collect statistics and store one TensorRange per float activation."""
        data = qmodel.calibration
        if data is None:
            raise PassError("calibrate needs calibration data (--calib)")
        if self.samples:
            data = data.head(self.samples)
        if len(data) == 0:
            raise DataError(f"{data.source}: the calibration set is empty")
        method = self.method or qmodel.scheme.calibration
        names = _observed_values(qmodel.graph)
        use_hist = method in ("percentile", "entropy", "mse")
        stats = [GrowingHistogram() for _ in names]
        limit = self._batch_size(qmodel)
        layer_inputs = _layer_inputs(qmodel.graph) if self.input_means > 0 else []
        means = _Means(layer_inputs)
        pending: list[list[tuple[float, float, np.ndarray]]] = []
        for i, (rows, outs, batch_means) in enumerate(self._sweep(qmodel, data, names, use_hist, limit,
                                                                   layer_inputs), 1):
            means.add(rows, batch_means)
            pending.append(outs)
            if i % max(1, _FLUSH_SAMPLES // limit) == 0:
                _flush(stats, pending, use_hist)
                pending = []
        _flush(stats, pending, use_hist)
        ranges = {name: self._range(method, s) for name, s in zip(names, stats, strict=True)}
        qmodel.ranges.update(ranges)
        qmodel.input_means.update(means.result())
        if layer_inputs:
            qmodel.analysis.record(self.name, input_mean_samples=means.rows)
        qmodel.analysis.calibration = CalibrationSummary(method, len(data), len(names))
        return PassResult(qmodel, False)

    def _batch_size(self, qmodel: QModel) -> int:
        fixed_one = any(v.shape is not None and len(v.shape) and v.shape[0] == 1 for v in qmodel.graph.inputs)
        return 1 if fixed_one else max(1, min(self.batch_size, self._fits(qmodel)))

    def _sweep(self, qmodel: QModel, data: DataSet, names: list[str], sample: bool, limit: int,
               layer_inputs: list[str]) -> Iterator[tuple[int, list[tuple[float, float, np.ndarray]],
                                                         list[np.ndarray]]]:
        """Per batch, each tensor's (min, max, strided sample), reduced inside onnxruntime.

        Only the reductions (and the samples) leave the session, not every activation, so its
        memory planner reuses activation buffers as in plain inference.
        """
        # The same number of values per sample whatever the batch: RANGE_SAMPLE per 16 samples.
        per_batch = max(1, RANGE_SAMPLE * limit // 16) if sample else 0
        # Mean nodes slow every run of a session that has them, fetched or not (onnxruntime lays
        # the convs' inputs out again for them): the first samples run in a session with them,
        # the rest in one without.
        split = min(len(data), -(-self.input_means // limit) * limit) if layer_inputs else 0
        inputs = layer_inputs if split else []
        session, wanted = _range_session(qmodel, names, per_batch, inputs)
        seen = 0
        for batch in progress(data.batches(limit), -(-len(data) // limit), f"calibrating {qmodel.name}"):
            if inputs and seen >= split:
                del session
                inputs = []
                session, wanted = _range_session(qmodel, names, per_batch, inputs)
            rows = len(next(iter(batch.values()))) if data.batch_first else 1
            outs = session.run(None, batch)
            seen += rows
            yield (rows, [(float(outs[w[0]]), float(outs[w[1]]), outs[w[2]] if sample else _NO_SAMPLE)
                          for w in wanted], outs[len(outs) - len(inputs):])

    def _fits(self, qmodel: QModel) -> int:
        """Samples a batch may hold within ``memory-mb``.

        Taken as the largest activation (static dims) of that many samples, and three more as
        large alive beside it.
        """
        largest = 0
        for node in qmodel.graph:
            for out in node.outputs:
                dims = [d for d in list(out.shape or [])[1:] if isinstance(d, int)]
                if out.dtype == ir.DataType.FLOAT and dims and len(dims) == len(out.shape or []) - 1:
                    largest = max(largest, 4 * int(np.prod(dims)))
        return int(max(1, self.memory_mb * 2**20 // max(4 * largest, 1)))

    @staticmethod
    def _finite(lo: float, hi: float, method: str) -> TensorRange:
        if not np.isfinite(lo) or not np.isfinite(hi):  # never observed (empty) or inf values
            lo, hi = (0.0, 0.0) if not np.isfinite(lo) and not np.isfinite(hi) else (lo, hi)
            lo = lo if np.isfinite(lo) else float(np.finfo(np.float32).min)
            hi = hi if np.isfinite(hi) else float(np.finfo(np.float32).max)
        return TensorRange(float(lo), float(hi), method)

    def _range(self, method: str, stats: GrowingHistogram) -> TensorRange:
        lo, hi = stats.lo, stats.hi
        if method == "minmax" or not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            return self._finite(lo, hi, method)
        hist, edges = stats.trimmed()
        if method == "percentile":
            r = percentile_range(hist, edges, self.percentile)
        elif method == "entropy":
            r = entropy_range(hist, edges, self.bits)
        else:
            r = mse_range(hist, edges, self.bits)
        return TensorRange(r[0], r[1], method)
