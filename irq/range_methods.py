"""Choosing a quantization range from a tensor's histogram: min-max, percentile, entropy, MSE.

All methods read a fixed-size histogram, so their cost and memory do not depend on how many
calibration samples were seen.
"""

from __future__ import annotations

import numpy as np


def _fake_quant_grid(lo: np.ndarray, hi: np.ndarray, levels: int, x: np.ndarray) -> np.ndarray:
    """Quantize-dequantize points ``x`` (bins) for each candidate range (rows)."""
    lo = np.minimum(lo, 0.0)[:, None]
    hi = np.maximum(hi, 0.0)[:, None]
    scale = np.maximum((hi - lo) / (levels - 1), 1e-12)
    zp = np.round(-lo / scale)
    q = np.clip(np.round(x[None, :] / scale) + zp, 0, levels - 1)
    return (q - zp) * scale


def _candidates(lo: float, hi: float, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ranges shrinking towards zero: [lo*a, hi*a] for a in (0.05, 1]."""
    alphas = np.linspace(1.0, 0.05, n)
    return lo * alphas, hi * alphas


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
    """The candidate range with the smallest expected squared quantization error."""
    centers = (edges[:-1] + edges[1:]) / 2
    mask = hist > 0
    centers, weights = centers[mask], hist[mask].astype(np.float64)
    los, his = _candidates(float(edges[0]), float(edges[-1]))
    err = ((_fake_quant_grid(los, his, 1 << bits, centers) - centers) ** 2) @ weights
    best = int(np.argmin(err))
    return float(los[best]), float(his[best])


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / max(p.sum(), 1e-12)
    q = q / max(q.sum(), 1e-12)
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-12))))


def entropy_range(hist: np.ndarray, edges: np.ndarray, bits: int) -> tuple[float, float]:
    """The range whose quantized distribution is closest in KL divergence to the observed one.

    For each candidate clipping range the observed histogram is clipped (outliers folded into
    the edge bins) and compared with itself re-binned to ``2**bits`` levels (TensorRT's method,
    generalised to asymmetric ranges).
    """
    levels = 1 << bits
    n = len(hist)
    los, his = _candidates(float(edges[0]), float(edges[-1]), 60)
    width = (edges[-1] - edges[0]) / n
    best, best_kl = 0, np.inf
    for i, (lo, hi) in enumerate(zip(los, his, strict=True)):
        a = int(np.clip(np.floor((lo - edges[0]) / width), 0, n - 1))
        b = int(np.clip(np.ceil((hi - edges[0]) / width), a + 1, n))
        if b - a < levels // 2 and i > 0:
            break
        p = hist[a:b].astype(np.float64).copy()
        p[0] += hist[:a].sum()
        p[-1] += hist[b:].sum()
        chunks = np.array_split(np.arange(b - a), min(levels, b - a))
        q = np.zeros_like(p)
        for idx in chunks:
            nz = hist[a:b][idx] > 0
            if nz.any():
                q[idx[nz]] = hist[a:b][idx].sum() / nz.sum()
        kl = _kl(p, q)
        if kl < best_kl:
            best, best_kl = i, kl
    return float(los[best]), float(his[best])
