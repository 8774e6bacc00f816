"""Calibration: run the float model on the calibration set and choose a range per activation.

Streaming, one sweep: each tensor keeps its exact min/max and (for the histogram methods) a
fixed-size histogram whose range doubles as needed (irq/quant/histogram.py); no activations are
kept, so memory does not grow with the number of samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.errors import DataError, PassError
from irq.ir.findings import CalibrationSummary
from irq.ir.model import QModel, float_value_names
from irq.ir.ort import batch_limit, make_session, with_outputs
from irq.pipeline.infra import Pass, PassResult
from irq.progress import progress
from irq.quant.histogram import GrowingHistogram
from irq.quant.ranges import CALIBRATION_METHODS, entropy_range, mse_range, percentile_range
from irq.quant.spec import TensorRange

METHODS = CALIBRATION_METHODS


def _observed_values(graph: ir.Graph) -> list[str]:
    """Float activations worth a range: graph inputs and node outputs that are not constants."""
    return list(dict.fromkeys(float_value_names(graph)))


@dataclass(frozen=True)
class Calibrate(Pass):
    """Annotate ``qmodel.ranges`` from ``qmodel.calibration``.

    Options: ``method`` (minmax, percentile, entropy, mse), ``percentile`` (for percentile),
    ``bits`` (the activation width the range is optimised for), ``batch-size``, ``samples``
    (0: all), ``memory-mb`` (the budget for one batch's activations; the batch shrinks to fit).
    """

    name = "calibrate"
    rewrites_graph = False
    reads_calibration_data = True
    method: str = ""
    percentile: float = 99.99
    bits: int = 8
    batch_size: int = 16
    samples: int = 0
    memory_mb: int = 256

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
        session = make_session(with_outputs(qmodel.to_proto(), names))
        out_names = [o.name for o in session.get_outputs()]
        wanted = [out_names.index(n) for n in names]
        limit = min(batch_limit(session) or self.batch_size, self.batch_size)
        if limit > 1:
            # Every activation of a batch is alive at once; keep that under the memory budget.
            first = session.run(out_names, next(data.batches(1)))
            per_sample = sum(a.nbytes for a in first) or 1
            limit = int(max(1, min(limit, self.memory_mb * 2**20 // per_sample)))

        def sweep(desc: str = "calibrating"):
            batches = data.batches(limit)
            for batch in progress(batches, -(-len(data) // limit), f"{desc} {qmodel.name}"):
                outs = session.run(out_names, batch)
                yield [outs[i] for i in wanted]

        stats = [GrowingHistogram() for _ in names]
        use_hist = method in ("percentile", "entropy", "mse")
        for outs in sweep():
            for s, a in zip(stats, outs, strict=True):
                if use_hist:
                    s.update(a)
                elif a.size:
                    s.lo, s.hi = min(s.lo, float(a.min())), max(s.hi, float(a.max()))
        ranges = {name: self._range(method, s) for name, s in zip(names, stats, strict=True)}
        qmodel.ranges.update(ranges)
        qmodel.analysis.calibration = CalibrationSummary(method, len(data), len(names))
        return PassResult(qmodel, False)

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
