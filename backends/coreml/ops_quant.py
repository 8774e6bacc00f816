"""QuantizeLinear / DequantizeLinear: the IR's decisions carried into the package as they are.

* DQ of a constant int8/uint8 tensor -> a :class:`QuantWeight`, placed later as a constexpr
  op holding the same integers, scales and zero points (never re-quantized).
* DQ of a constant int32 bias, or of an integer constant the lowering folded itself (not an
  IR weight) -> folded to float32 here with ONNX's arithmetic: ``float32(q - zp) * scale``.
* Q/DQ of a run-time activation -> MIL ``quantize``/``dequantize`` with the IR's scale and zero
  point (iOS17+; see :mod:`irq.backends.coreml.deploy`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb

from irq.backends.coreml.context import LoweringContext, QuantWeight, attr, is_var
from irq.backends.coreml.registry import lowers
from irq.ir.model import constant_array

_STORAGE = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8"}


def _params(ctx: LoweringContext, node: ir.Node, rank: int) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Scale (float32), zero point and normalised axis (None for per-tensor) of a Q/DQ node."""
    if attr(node, "block_size", 0):
        raise ctx.error("block-wise quantization has no Core ML form in this backend")
    scale = ctx.need_const(node, 1, "scale").astype(np.float32)
    zp = ctx.const(node, 2)
    if zp is None and ctx.raw(node, 2) is not None:
        raise ctx.error("zero point (input 2) must be a constant")
    if zp is None:
        zp = np.zeros(scale.shape, np.uint8)  # ONNX's default: uint8, zero point 0
    if scale.ndim > 1 or scale.shape != zp.shape:
        raise ctx.error(f"scale {scale.shape} and zero point {zp.shape} must be matching "
                        "scalars or vectors")
    axis = None
    if scale.ndim == 1:
        axis = int(attr(node, "axis", 1))
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis < rank:
            raise ctx.error(f"axis {attr(node, 'axis', 1)} out of range for rank {rank}")
    return scale, zp, axis


def _broadcast(v: np.ndarray, axis: int | None, rank: int) -> np.ndarray:
    if axis is None:
        return v
    shape = [1] * rank
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def _need_activation_quantization(ctx: LoweringContext) -> None:
    if not ctx.deployment.activation_quantization:
        raise ctx.error(f"activation quantization needs iOS17/macOS14 or later "
                        f"(deployment target is {ctx.deployment.name}); use coreml-int8 "
                        "(weight-only) or a newer deployment target")


@lowers("DequantizeLinear")
def dequantize_linear(ctx: LoweringContext, node: ir.Node):
    """A quantized weight, a folded bias or a MIL ``dequantize``."""
    x = ctx.raw(node, 0)
    rank = len(x.shape)
    scale, zp, axis = _params(ctx, node, rank)
    if isinstance(x, np.ndarray):
        stored = constant_array(node.inputs[0]) is not None  # an initializer or Constant: a weight
        if x.dtype in _STORAGE and stored:
            if zp.dtype != x.dtype:
                raise ctx.error(f"zero point dtype {zp.dtype} differs from data dtype {x.dtype}")
            return QuantWeight(str(node.inputs[0].name), x, scale, zp, 0 if axis is None else axis)
        if x.dtype in (*_STORAGE, np.dtype(np.int32)):
            # A bias (Core ML has no int32 constexpr) or a constant the lowering folded (e.g. a
            # quantized position-embedding slice): ONNX's arithmetic, float32((q - zp) * scale).
            q = x.astype(np.int64) - _broadcast(zp.astype(np.int64), axis, rank)
            return q.astype(np.float32) * _broadcast(scale, axis, rank)
        raise ctx.error(f"cannot dequantize a constant of dtype {x.dtype}")
    if not is_var(x):
        raise ctx.error("dequantizing a quantized weight twice is not supported")
    _need_activation_quantization(ctx)
    if zp.dtype not in _STORAGE:
        raise ctx.error(f"activation dtype {zp.dtype} is not int8/uint8")
    kwargs = {} if axis is None else {"axis": axis}
    return mb.dequantize(input=x, scale=scale, zero_point=zp, name=ctx.name(node), **kwargs)


@lowers("QuantizeLinear")
def quantize_linear(ctx: LoweringContext, node: ir.Node):
    """A MIL ``quantize`` with the IR's scale and zero point (constant inputs were folded)."""
    x = ctx.raw(node, 0)
    if not is_var(x):
        raise ctx.error("quantizing a constant that was not folded (is its scale constant?)")
    scale, zp, axis = _params(ctx, node, len(x.shape))
    _need_activation_quantization(ctx)
    if zp.dtype not in _STORAGE:
        raise ctx.error(f"quantized dtype {zp.dtype} is not int8/uint8")
    kwargs = {} if axis is None else {"axis": axis}
    return mb.quantize(input=x, scale=scale, zero_point=zp, output_dtype=_STORAGE[zp.dtype],
                       name=ctx.name(node), **kwargs)
