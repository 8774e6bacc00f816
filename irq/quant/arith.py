"""The arithmetic of quantization, shared by every pass, backend and QAT so they agree bit for bit."""

from __future__ import annotations

import numpy as np

from irq.quant.spec import QType, QuantSpec, TensorRange

_TINY = float(np.finfo(np.float32).tiny) * 1e6


def activation_spec(r: TensorRange, qtype: QType, symmetric: bool = False) -> QuantSpec:
    """Per-tensor scale and zero point covering ``r`` (widened to include 0, as ONNX requires).

    The scale is computed in float32, exactly as the runtime will hold it.
    """
    lo, hi = min(r.lo, 0.0), max(r.hi, 0.0)
    if symmetric:
        bound = max(-lo, hi)
        half = (qtype.qmax - qtype.qmin) // 2
        scale = np.float32(bound / half) if bound > 0 else np.float32(1.0)
        zp = 0 if qtype.signed else (qtype.qmax + 1) // 2
    else:
        scale = np.float32((hi - lo) / (qtype.qmax - qtype.qmin)) if hi > lo else np.float32(1.0)
        scale = max(scale, np.float32(_TINY))
        zp = int(np.clip(np.round(qtype.qmin - lo / float(scale)), qtype.qmin, qtype.qmax))
    return QuantSpec(qtype, (float(scale),), (zp,))


def weight_scales(w: np.ndarray, axis: int | None, qtype: QType = QType.INT8) -> np.ndarray:
    """Symmetric scales (float32), one per slice along ``axis`` (None: one for the tensor).

    The integer range is symmetric ([-127, 127] for int8) so that negation is exact and the
    zero point is 0, as the accelerated kernels of every runtime want.
    """
    bound = qtype.qmax
    if axis is None:
        m = np.abs(w).max(initial=0.0)
        maxes = np.array([m], dtype=np.float64)
    else:
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        maxes = np.abs(w).max(axis=reduce, initial=0.0).astype(np.float64)
    scales = np.where(maxes > 0, maxes / bound, 1.0).astype(np.float32)
    return scales


def _per_axis(scale: np.ndarray, zero_point: np.ndarray, ndim: int,
              axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and zero point (int64) shaped to broadcast along ``axis`` of a rank-``ndim`` tensor."""
    s = np.asarray(scale, dtype=np.float32)
    z = np.asarray(zero_point, dtype=np.int64)
    if axis is not None and s.ndim == 1 and s.size > 1:
        shape = [1] * ndim
        shape[axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return s, z


def quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qtype: QType,
             axis: int | None = None) -> np.ndarray:
    """ONNX QuantizeLinear semantics: round half to even, saturate."""
    s, z = _per_axis(scale, zero_point, x.ndim, axis)
    q = np.rint(x.astype(np.float32) / s) + z
    return np.clip(q, qtype.qmin, qtype.qmax).astype(qtype.numpy_dtype)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
               axis: int | None = None) -> np.ndarray:
    """ONNX DequantizeLinear semantics, in float32."""
    s, z = _per_axis(scale, zero_point, q.ndim, axis)
    return ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


def quantize_weight(w: np.ndarray, axis: int | None, qtype: QType = QType.INT8,
                    scales: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric (per-channel when ``axis`` is set) weight quantization: (int data, scales).

    ``scales`` (one per slice) replaces the max-abs scales, e.g. a searched clipping.
    """
    scales = weight_scales(w, axis, qtype) if scales is None else np.asarray(scales, np.float32)
    zeros = np.zeros_like(scales, dtype=np.int64)
    return quantize(w, scales, zeros, qtype, axis), scales


def quantize_bias(b: np.ndarray, input_scale: float, w_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias with scale input_scale * weight_scale (per channel), as integer kernels need."""
    scales = (np.float32(input_scale) * w_scales.astype(np.float32)).astype(np.float32)
    scales = np.maximum(scales, np.float32(_TINY))
    q = np.clip(np.rint(b.astype(np.float64) / scales), -(2**31) + 1, 2**31 - 1).astype(np.int32)
    return q, scales
