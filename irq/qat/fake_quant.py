"""Fake quantization in torch with the arithmetic of ``irq.quant.arith``, bit for bit.

Forward passes compute exactly what the lowered QDQ graph computes: activation scales in
float32 from a range widened to include 0, zero points rounded half to even, weights
quantized symmetrically with scale max|w|/qmax per output channel, biases to int32 with scale
input_scale * weight_scale. Backward passes use the straight-through estimator: rounding
passes gradients unchanged, clamping stops them outside the range. With learned ranges the
gradient reaches the range ends through the scale and zero point (LSQ-style).
"""

from __future__ import annotations

import torch
from torch import nn

from irq.quant.arith import _TINY
from irq.quant.spec import QType, TensorRange

_INT32_MAX = 2**31 - 1


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


class ActRange(nn.Module):
    """The range [lo, hi] of one quantized activation, in float64 as TensorRange holds it.

    ``relu_folded``: the quantizer stands in for a ReLU/Clip(0, cap) that insert-qdq folds
    into it, so ``lo`` stays 0 (the quantizer must clamp exactly as the activation would) and
    ``hi`` never exceeds ``cap``.
    """

    def __init__(self, r: TensorRange, learn: bool, relu_folded: bool = False, cap: float | None = None) -> None:
        super().__init__()
        self.relu_folded, self.cap, self.method = relu_folded, cap, r.method
        lo = 0.0 if relu_folded else r.lo
        self.lo = nn.Parameter(torch.tensor(lo, dtype=torch.float64), requires_grad=learn and not relu_folded)
        self.hi = nn.Parameter(torch.tensor(r.hi, dtype=torch.float64), requires_grad=learn)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) widened to include 0 and capped as the folded activation caps them."""
        lo = torch.clamp(self.lo, max=0.0)
        hi = torch.clamp(self.hi, min=0.0)
        if self.cap is not None:
            hi = torch.clamp(hi, max=self.cap)
        return lo, hi

    def to_range(self) -> TensorRange:
        """The current range as the IR stores it (the export writes it into ``qmodel.ranges``)."""
        lo, hi = self.bounds()
        method = self.method if not (self.lo.requires_grad or self.hi.requires_grad) else "qat"
        return TensorRange(float(lo.detach()), float(hi.detach()), method)

    def spec(self, qtype: QType, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale float32, zero point) exactly as ``quant_math.activation_spec`` computes them."""
        lo, hi = self.bounds()
        if symmetric:
            bound = torch.maximum(-lo, hi)
            half = (qtype.qmax - qtype.qmin) // 2
            scale = torch.where(bound > 0, bound / half, torch.ones_like(bound)).float()
            zero = 0.0 if qtype.signed else float((qtype.qmax + 1) // 2)
            return scale, torch.full_like(scale, zero)
        scale = torch.where(hi > lo, (hi - lo) / (qtype.qmax - qtype.qmin), torch.ones_like(hi)).float()
        scale = torch.clamp(scale, min=float(torch.tensor(_TINY, dtype=torch.float32)))
        zp = torch.clamp(round_ste(qtype.qmin - lo / scale.double()), qtype.qmin, qtype.qmax)
        return scale, zp.float()


class _FakeQuant(torch.autograd.Function):
    """Per-tensor QuantizeLinear + DequantizeLinear in few passes over memory.

    Gradients (straight-through): x gets the incoming gradient where the code was not
    clamped; the scale gets round(x/s) - x/s inside the range and qmin - z or qmax - z where
    clamped; the zero point gets -s where clamped (LSQ+).
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):  # type: ignore[no-untyped-def]
        """Quantize (x / scale, round half to even, + zero point, saturate) and dequantize."""
        t = torch.round(x / scale).add_(zero_point)
        low, high = t < qmin, t > qmax
        y = t.clamp_(qmin, qmax).sub_(zero_point).mul_(scale)
        ctx.qmin, ctx.qmax = qmin, qmax
        learn = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        ctx.save_for_backward(low, high, x if learn else None, scale, zero_point)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        """Straight-through gradients for x, the scale and the zero point."""
        low, high, x, scale, zp = ctx.saved_tensors
        inside = ~(low | high)
        gx = grad * inside if ctx.needs_input_grad[0] else None
        gs = gz = None
        if x is not None:
            u = x / scale
            ds = torch.where(inside, torch.round(u) - u, torch.where(low, ctx.qmin - zp, ctx.qmax - zp))
            gs = (grad * ds).sum().reshape(scale.shape)
            gz = (grad * (~inside) * -scale).sum().reshape(zp.shape)
        return gx, gs, gz, None, None


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qtype: QType) -> torch.Tensor:
    """QuantizeLinear then DequantizeLinear, per tensor, with straight-through gradients."""
    return _FakeQuant.apply(x, scale, zero_point, float(qtype.qmin), float(qtype.qmax))


def weight_scale(w: torch.Tensor, axis: int | None, qtype: QType) -> torch.Tensor:
    """``quant_math.weight_scales`` in torch, shaped to broadcast against ``w`` (no gradient)."""
    a = w.detach().abs()
    if axis is None:
        amax = a.max()
    else:
        dims = tuple(i for i in range(w.dim()) if i != axis % w.dim())
        amax = a.amax(dim=dims, keepdim=True)
    return torch.where(amax > 0, amax.double() / qtype.qmax, torch.ones_like(amax, dtype=torch.float64)).float()


def fake_quant_weight(w: torch.Tensor, axis: int | None, qtype: QType) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric (per-channel when ``axis`` is set) fake-quantized weight and its scales."""
    scale = weight_scale(w, axis, qtype)
    q = torch.clamp(round_ste(w / scale), qtype.qmin, qtype.qmax)
    return q * scale, scale


def fake_quant_bias(b: torch.Tensor, input_scale: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """``quant_math.quantize_bias`` then dequantization: int32 with scale input_scale * w_scale."""
    scales = torch.clamp(input_scale.detach().float() * w_scale.reshape(-1).float(),
                         min=float(torch.tensor(_TINY, dtype=torch.float32)))
    s64 = scales.double()
    q = torch.clamp(torch.round(b.detach().double() / s64), -_INT32_MAX, _INT32_MAX)
    return b + ((q * s64).float() - b).detach()
