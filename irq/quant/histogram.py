"""A streaming histogram whose range doubles as larger values arrive, so one sweep suffices.

Bins cover [-R, R]. When a batch exceeds R, R doubles and neighbouring bin pairs merge into
the middle half of the bins: counts are never re-binned approximately, only summed. Memory is
fixed (one array of bins) whatever the number of samples.
"""

from __future__ import annotations

import numpy as np

BINS = 4096  # over [-R, R]: a one-sided (post-ReLU) tensor still gets 2048 bins
SAMPLE = 1 << 17  # values histogrammed per batch; larger activations are sampled with an odd stride
# (calibrate takes its samples in the graph: irq.quant.probes.add_range_probe, the same odd stride)


class GrowingHistogram:
    """Exact min/max plus a histogram over a power-of-two-growing symmetric range."""

    def __init__(self) -> None:
        self.lo, self.hi = np.inf, -np.inf
        self.bound = 0.0
        self.counts = np.zeros(BINS, dtype=np.int64)
        self.nonfinite = 0

    def update(self, a: np.ndarray) -> None:
        """Add one batch of values."""
        flat = a.reshape(-1)
        if flat.size:
            self.add(flat[::(flat.size // SAMPLE) | 1], float(flat.min()), float(flat.max()))

    def add(self, sample: np.ndarray, lo: float, hi: float) -> None:
        """Add a batch given as its exact extremes and a strided sample of its values.

        When the extremes are not finite (inf or NaN in the batch), they are taken from the
        sample's finite values, and the sample's non-finite values are counted.
        """
        flat = sample.reshape(-1)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            finite = flat[np.isfinite(flat)]
            self.nonfinite += flat.size - finite.size
            if not finite.size:
                return
            flat, lo, hi = finite, float(finite.min()), float(finite.max())
        if not flat.size:
            return
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        peak = max(-lo, hi)
        if self.bound == 0.0:
            self.bound = peak if peak > 0 else 1e-12
        while peak > self.bound:
            self._double()
        self.counts += np.histogram(flat, bins=BINS, range=(-self.bound, self.bound))[0]

    def _double(self) -> None:
        merged = self.counts.reshape(BINS // 2, 2).sum(axis=1)
        self.counts = np.zeros(BINS, dtype=np.int64)
        self.counts[BINS // 4: BINS // 4 + BINS // 2] = merged
        self.bound *= 2

    def trimmed(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) restricted to the bins that cover [lo, hi], edges clamped to them."""
        width = 2 * self.bound / BINS
        first = int(np.clip(np.floor((self.lo + self.bound) / width), 0, BINS - 1))
        last = int(np.clip(np.ceil((self.hi + self.bound) / width), first + 1, BINS))
        edges = -self.bound + width * np.arange(first, last + 1)
        edges[0], edges[-1] = self.lo, self.hi
        return self.counts[first:last], edges
