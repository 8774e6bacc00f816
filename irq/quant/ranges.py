"""Choosing a quantization range from a tensor's histogram: min-max, percentile, entropy, MSE.

All methods read a fixed-size histogram, so their cost and memory do not depend on how many
calibration samples were seen.
"""

from __future__ import annotations

import numpy as np

#: The calibration methods the calibrate pass (and recipes) accept.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy", "mse")


def _fake_quant_grid(lo: np.ndarray, hi: np.ndarray, levels: int, x: np.ndarray) -> np.ndarray:
    """Quantize-dequantize points ``x`` (bins) for each candidate range (rows)."""
    lo = np.minimum(lo, 0.0)[:, None]
    hi = np.maximum(hi, 0.0)[:, None]
    scale = np.maximum((hi - lo) / (levels - 1), 1e-12)
    zp = np.round(-lo / scale)
    q = np.clip(np.round(x[None, :] / scale) + zp, 0, levels - 1)
    return (q - zp) * scale


def _coordinate_search(objective, lo: float, hi: float, steps: int = 100, rounds: int = 2) -> tuple[float, float]:
    """Minimise ``objective(los, his) -> errors`` over ranges inside [lo, hi].

    Each round shrinks the upper end with the lower fixed, then the lower with the upper
    fixed; a tail that starts at zero (ReLU outputs) is never moved. Searching the ends
    separately matters: one outlier on one side must not cost the other side its range.
    """
    alphas = np.linspace(1.0, 0.02, steps)
    best_lo, best_hi = lo, hi
    for _ in range(rounds):
        if best_hi > 0:
            his = hi * alphas
            errs = objective(np.full(steps, best_lo), his)
            best_hi = float(his[int(np.argmin(errs))])
        if best_lo < 0:
            los = lo * alphas
            errs = objective(los, np.full(steps, best_hi))
            best_lo = float(los[int(np.argmin(errs))])
    return best_lo, best_hi


def minmax_range(lo: float, hi: float) -> tuple[float, float]:
    """The observed range itself."""
    return lo, hi


def percentile_range(hist: np.ndarray, edges: np.ndarray, percentile: float) -> tuple[float, float]:
    """Drop ``100 - percentile`` percent of the mass from each tail.

    A tail that starts at zero (ReLU outputs) keeps its zero: clipping it would only move the
    zero point and add error.
    """
    cdf = np.cumsum(hist, dtype=np.float64)
    total = cdf[-1]
    if total <= 0:
        return float(edges[0]), float(edges[-1])
    tail = total * (100.0 - percentile) / 100.0
    lo_idx = int(np.searchsorted(cdf, tail, side="right"))
    hi_idx = int(np.searchsorted(cdf, total - tail, side="left"))
    lo = float(edges[min(lo_idx, len(hist) - 1)]) if edges[0] < 0 else float(edges[0])
    hi = float(edges[min(hi_idx + 1, len(edges) - 1)])
    return min(lo, 0.0) if edges[0] < 0 else lo, max(hi, 0.0)


def mse_range(hist: np.ndarray, edges: np.ndarray, bits: int) -> tuple[float, float]:
    """The range with the smallest expected squared quantization error over the histogram."""
    centers = (edges[:-1] + edges[1:]) / 2
    mask = hist > 0
    centers, weights = centers[mask], hist[mask].astype(np.float64)

    def objective(los: np.ndarray, his: np.ndarray) -> np.ndarray:
        return ((_fake_quant_grid(los, his, 1 << bits, centers) - centers) ** 2) @ weights

    return _coordinate_search(objective, float(edges[0]), float(edges[-1]))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / max(p.sum(), 1e-12)
    q = q / max(q.sum(), 1e-12)
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-12))))


def _kl_after_quantization(hist: np.ndarray, edges: np.ndarray, lo: float, hi: float, levels: int) -> float:
    n = len(hist)
    width = (edges[-1] - edges[0]) / n
    a = int(np.clip(np.floor((lo - edges[0]) / width), 0, n - 1))
    b = int(np.clip(np.ceil((hi - edges[0]) / width), a + 1, n))
    p = hist[a:b].astype(np.float64).copy()
    p[0] += hist[:a].sum()
    p[-1] += hist[b:].sum()
    q = np.zeros_like(p)
    for idx in np.array_split(np.arange(b - a), min(levels, b - a)):
        nz = hist[a:b][idx] > 0
        if nz.any():
            q[idx[nz]] = hist[a:b][idx].sum() / nz.sum()
    return _kl(p, q)


def entropy_range(hist: np.ndarray, edges: np.ndarray, bits: int) -> tuple[float, float]:
    """The range whose quantized distribution is closest in KL divergence to the observed one.

    For each candidate range the observed histogram is clipped (outliers folded into the edge
    bins) and compared with itself re-binned to ``2**bits`` levels (TensorRT's method, with
    the two ends searched separately for asymmetric ranges, and the zero bin left out). Ranges narrower than half the
    levels' worth of bins are not considered: the histogram cannot judge them.
    """
    levels = 1 << bits
    width = (edges[-1] - edges[0]) / len(hist)
    min_span = width * levels / 2
    # Zero is exact in every range (ONNX ranges include it); the spike of exact zeros after
    # ReLU would otherwise dominate the divergence and pull the range in far too tight.
    hist = hist.copy()
    if edges[0] <= 0 <= edges[-1]:
        hist[min(int((0 - edges[0]) / width), len(hist) - 1)] = 0

    def objective(los: np.ndarray, his: np.ndarray) -> np.ndarray:
        return np.array([_kl_after_quantization(hist, edges, lo, hi, levels) if hi - lo >= min_span else np.inf
                         for lo, hi in zip(los, his, strict=True)])

    return _coordinate_search(objective, float(edges[0]), float(edges[-1]), steps=50, rounds=1)
