"""Lowering state: what each ONNX value has become on the MIL side.

An ONNX value maps to one of three things: a MIL ``Var`` (computed at run time), a numpy array
(a constant, folded here with numpy and ONNX semantics), or a :class:`QuantWeight` (an integer
constant behind a DequantizeLinear, kept integer until a consumer places it as a constexpr op
in the layout that consumer needs, so the int8 data reaches the package untouched).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Var

from irq.backends.coreml.deploy import Deployment
from irq.errors import LoweringError
from irq.ir.edit import UniqueNames
from irq.ir.model import node_label


@dataclass(frozen=True, eq=False)
class QuantWeight:
    """An integer weight and its dequantization parameters, exactly as the IR holds them."""

    source: str  # the ONNX initializer name
    data: np.ndarray  # int8 or uint8
    scale: np.ndarray  # float32, scalar or one per channel along ``axis``
    zero_point: np.ndarray  # data's dtype, same shape as scale
    axis: int  # normalised to >= 0
    perm: tuple[int, ...] | None = None  # data is the initializer transposed by perm

    @property
    def shape(self) -> tuple[int, ...]:
        """The weight's shape."""
        return tuple(self.data.shape)

    def transposed(self, perm: tuple[int, ...] | None) -> QuantWeight:
        """The same integers and scales with axes permuted (None: unchanged)."""
        if perm is None:
            return self
        total = tuple(perm) if self.perm is None else tuple(self.perm[p] for p in perm)
        return QuantWeight(self.source, np.ascontiguousarray(self.data.transpose(perm)), self.scale,
                           self.zero_point, list(perm).index(self.axis), total)


def attr(node: ir.Node, name: str, default: Any = None) -> Any:
    """An attribute's Python value, or ``default`` when the node does not set it."""
    a = node.attributes.get(name)
    if a is None:
        return default
    value = a.value
    return list(value) if isinstance(value, tuple) else value


def is_var(x: Any) -> bool:
    """True for a MIL run-time value (as opposed to a numpy constant or a quantized weight)."""
    return isinstance(x, Var)


def mil_operand(x: np.ndarray) -> np.ndarray:
    """A numpy constant in a dtype MIL programs hold (Core ML has no 64-bit tensors)."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return x.astype(np.float32)
    if x.dtype in (np.int64, np.uint32, np.uint64, np.int16, np.uint16):
        # Shape-derived int64 constants are far inside int32; clip the INT64_MAX sentinels.
        return np.clip(x, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    return x


class LoweringContext:
    """The values lowered so far, the weights placed and the node being lowered."""

    def __init__(self, deployment: Deployment, opset: int):
        self.deployment = deployment
        self.opset = opset
        self.values: dict[str, Any] = {}
        self.weights: list[dict[str, Any]] = []  # one record per constexpr op, for read-back
        self.node: ir.Node | None = None
        self._placed: dict[tuple[int, tuple[int, ...] | None], Var] = {}
        self._names = UniqueNames()

    # -- errors and names -------------------------------------------------------------------
    def error(self, message: str) -> LoweringError:
        """A LoweringError naming the node being lowered."""
        if self.node is None:
            return LoweringError(message)
        return LoweringError(f"{self.node.op_type} node {node_label(self.node)!r}: {message}")

    def name(self, node: ir.Node, index: int = 0) -> str:
        """A unique MIL identifier for output ``index`` of ``node`` (derived from its ONNX name)."""
        return self.identifier(node.outputs[index].name or node.op_type.lower())

    def identifier(self, onnx_name: str) -> str:
        """A MIL identifier for an ONNX name: non-word characters become _, collisions get _N."""
        base = re.sub(r"\W", "_", onnx_name)
        if not base or base[0].isdigit():
            base = f"v_{base}"
        return self._names.fresh(base)

    # -- reading inputs -------------------------------------------------------------------
    def raw(self, node: ir.Node, index: int) -> Any:
        """Whatever input ``index`` became (None for an absent optional input)."""
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None:
            return None
        try:
            return self.values[str(value.name)]
        except KeyError:
            raise self.error(f"input {value.name!r} is not defined before its use") from None

    def const(self, node: ir.Node, index: int) -> np.ndarray | None:
        """Input ``index`` as a numpy array when it is a (float or index) constant, else None."""
        x = self.raw(node, index)
        return x if isinstance(x, np.ndarray) else None

    def need_const(self, node: ir.Node, index: int, what: str) -> np.ndarray:
        """Input ``index`` as a numpy constant; LoweringError when it is computed at run time."""
        x = self.const(node, index)
        if x is None:
            raise self.error(f"{what} (input {index}) must be a constant for Core ML")
        return x

    def tensor(self, node: ir.Node, index: int) -> Var | np.ndarray:
        """Input ``index`` as a MIL operand (a quantized weight is placed as it is laid out)."""
        return self.weight(node, index)

    def weight(self, node: ir.Node, index: int, perm: tuple[int, ...] | None = None) -> Var | np.ndarray:
        """Input ``index`` as a MIL operand, transposed by ``perm`` (for weights a layer reorders).

        A quantized weight is transposed on its int8 data and scales, so its constexpr op holds
        the IR's integers in the layout the consumer reads (the record notes the permutation).
        """
        x = self.raw(node, index)
        if x is None:
            raise self.error(f"required input {index} is missing")
        if isinstance(x, QuantWeight):
            return self._place(x, perm)
        if isinstance(x, np.ndarray):
            return mil_operand(x if perm is None else np.ascontiguousarray(x.transpose(perm)))
        return x if perm is None else mb.transpose(x=x, perm=list(perm))

    def shape(self, node: ir.Node, index: int) -> tuple[int, ...]:
        """The static shape of input ``index``."""
        x = self.raw(node, index)
        if x is None:
            raise self.error(f"required input {index} is missing")
        shape = x.shape
        if any(not isinstance(d, int) for d in shape):
            raise self.error(f"input {index} has a dynamic shape {shape}")
        return tuple(int(d) for d in shape)

    def rank(self, node: ir.Node, index: int) -> int:
        """The rank of input ``index``."""
        return len(self.shape(node, index))

    # -- quantized weights ----------------------------------------------------------------
    def _place(self, qw: QuantWeight, perm: tuple[int, ...] | None) -> Var:
        key = (id(qw), None if perm is None else tuple(perm))
        if key in self._placed:
            return self._placed[key]
        placed = qw.transposed(perm)
        data, axis, scale, zp = placed.data, placed.axis, placed.scale, placed.zero_point
        if self.deployment.ios >= 18:
            # blockwise_shift_scale wants scale/offset of the data's rank: one block per channel.
            bshape = [1] * data.ndim
            if scale.ndim == 1:
                bshape[axis] = scale.shape[0]
            offset = zp.reshape(bshape) if np.any(zp != 0) else None
            var = mb.constexpr_blockwise_shift_scale(data=data, scale=scale.reshape(bshape),
                                                     offset=offset)
        else:
            var = mb.constexpr_affine_dequantize(quantized_data=data, zero_point=zp, scale=scale,
                                                 axis=axis)
        self._placed[key] = var
        self.weights.append({"source": qw.source, "perm": None if placed.perm is None else list(placed.perm),
                             "op": self.deployment.weight_op})
        return var
