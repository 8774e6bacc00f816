"""Elementwise, activation, comparison, cast, softmax and reduction lowerings.

MIL's elementwise ops broadcast like numpy, which is ONNX's multidirectional broadcasting, so
binary ops map one to one.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from irq.backends.coreml.context import LoweringContext, attr, is_var
from irq.backends.coreml.registry import lowers

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Max": "maximum", "Min": "minimum",
           "Equal": "equal", "Greater": "greater", "Less": "less", "GreaterOrEqual": "greater_equal",
           "LessOrEqual": "less_equal", "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor",
           "Mod": "mod"}
_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Sqrt": "sqrt",
          "Abs": "abs", "Erf": "erf", "Floor": "floor", "Ceil": "ceil", "Sin": "sin", "Cos": "cos",
          "Softplus": "softplus", "Softsign": "softsign", "Sign": "sign", "Not": "logical_not",
          "Log": "log"}
_CAST = {ir.DataType.FLOAT: "fp32", ir.DataType.FLOAT16: "fp16", ir.DataType.INT32: "int32",
         ir.DataType.INT64: "int32", ir.DataType.BOOL: "bool", ir.DataType.DOUBLE: "fp32"}


@lowers(*_BINARY)
def binary(ctx: LoweringContext, node: ir.Node):
    """Broadcasting binary ops (numpy rules on both sides)."""
    x, y = ctx.tensor(node, 0), ctx.tensor(node, 1)
    if node.op_type in ("Max", "Min") and len(node.inputs) != 2:
        raise ctx.error("only the two-input form is supported")
    return getattr(mb, _BINARY[node.op_type])(x=x, y=y, name=ctx.name(node))


@lowers("Pow")
def pow_(ctx: LoweringContext, node: ir.Node):
    """X ** y; x ** 2 as x * x, which also keeps coremltools' ``fuse_pow2_sqrt`` pass away.

    That pass rewrites sqrt(pow(x, 2)) to x, which is wrong for negative x (ONNX gives |x|).
    """
    x, y = ctx.tensor(node, 0), ctx.const(node, 1)
    if y is not None and y.size == 1 and float(y.reshape(-1)[0]) == 2.0 and is_var(x):
        return mb.mul(x=x, y=x, name=ctx.name(node))
    return mb.pow(x=x, y=ctx.tensor(node, 1), name=ctx.name(node))


@lowers("Div")
def div(ctx: LoweringContext, node: ir.Node):
    """Float division; integer division floors (ONNX truncates: they differ for negatives)."""
    x, y = ctx.tensor(node, 0), ctx.tensor(node, 1)
    op = mb.floor_div if types.is_int((x if is_var(x) else y).dtype) else mb.real_div
    return op(x=x, y=y, name=ctx.name(node))


@lowers(*_UNARY)
def unary(ctx: LoweringContext, node: ir.Node):
    """One-input elementwise ops."""
    return getattr(mb, _UNARY[node.op_type])(x=ctx.tensor(node, 0), name=ctx.name(node))


@lowers("Neg")
def neg(ctx: LoweringContext, node: ir.Node):
    """-x as x * -1 (MIL has no negate)."""
    x = ctx.tensor(node, 0)
    minus_one = np.int32(-1) if types.is_int(x.dtype) else np.float32(-1)
    return mb.mul(x=x, y=minus_one, name=ctx.name(node))


@lowers("Reciprocal")
def reciprocal(ctx: LoweringContext, node: ir.Node):
    """1 / x as a division: MIL's ``inverse`` adds epsilon 1e-4 to x, which ONNX does not."""
    return mb.real_div(x=np.float32(1), y=ctx.tensor(node, 0), name=ctx.name(node))


@lowers("Identity", "Dropout")
def identity(ctx: LoweringContext, node: ir.Node):
    """Pass the input through (inference-mode Dropout is the identity; its mask is not)."""
    if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1].name:
        raise ctx.error("Dropout's mask output is not supported")
    return ctx.raw(node, 0)


@lowers("LeakyRelu")
def leaky_relu(ctx: LoweringContext, node: ir.Node):
    """max(x, 0) + alpha * min(x, 0)."""
    return mb.leaky_relu(x=ctx.tensor(node, 0), alpha=float(attr(node, "alpha", 0.01)), name=ctx.name(node))


@lowers("Elu")
def elu(ctx: LoweringContext, node: ir.Node):
    """ELU with ONNX's default alpha 1."""
    return mb.elu(x=ctx.tensor(node, 0), alpha=float(attr(node, "alpha", 1.0)), name=ctx.name(node))


@lowers("HardSigmoid")
def hard_sigmoid(ctx: LoweringContext, node: ir.Node):
    """max(0, min(1, alpha * x + beta)), ONNX defaults alpha 0.2, beta 0.5."""
    return mb.sigmoid_hard(x=ctx.tensor(node, 0), alpha=float(attr(node, "alpha", 0.2)),
                           beta=float(attr(node, "beta", 0.5)), name=ctx.name(node))


@lowers("HardSwish")
def hard_swish(ctx: LoweringContext, node: ir.Node):
    """X * HardSigmoid(x; 1/6, 1/2) (MIL has no hard-swish op)."""
    x = ctx.tensor(node, 0)
    return mb.mul(x=x, y=mb.sigmoid_hard(x=x, alpha=1.0 / 6, beta=0.5), name=ctx.name(node))


@lowers("PRelu")
def prelu(ctx: LoweringContext, node: ir.Node):
    """X if x >= 0 else slope * x, with the slope broadcast as ONNX does."""
    x, slope = ctx.tensor(node, 0), ctx.tensor(node, 1)
    return mb.select(cond=mb.greater_equal(x=x, y=np.float32(0)), a=x, b=mb.mul(x=x, y=slope),
                     name=ctx.name(node))


@lowers("Gelu")
def gelu(ctx: LoweringContext, node: ir.Node):
    """Exact (erf) or tanh-approximated GELU (opset 20)."""
    mode = {"none": "EXACT", "tanh": "TANH_APPROXIMATION"}.get(attr(node, "approximate", "none"))
    if mode is None:
        raise ctx.error(f"unknown approximate={attr(node, 'approximate')!r}")
    return mb.gelu(x=ctx.tensor(node, 0), mode=mode, name=ctx.name(node))


@lowers("Clip")
def clip(ctx: LoweringContext, node: ir.Node):
    """Clip with bounds as inputs (opset 11+) or attributes (older); a missing bound is open."""
    x = ctx.tensor(node, 0)
    if ctx.opset < 11:
        lo, hi = attr(node, "min"), attr(node, "max")
    else:
        lo = None if ctx.raw(node, 1) is None else float(ctx.need_const(node, 1, "min"))
        hi = None if ctx.raw(node, 2) is None else float(ctx.need_const(node, 2, "max"))
    name = ctx.name(node)
    if lo is not None and hi is not None:
        return mb.clip(x=x, alpha=np.float32(lo), beta=np.float32(hi), name=name)
    if lo is not None:
        return mb.relu(x=x, name=name) if lo == 0 else mb.maximum(x=x, y=np.float32(lo), name=name)
    if hi is not None:
        return mb.minimum(x=x, y=np.float32(hi), name=name)
    return x


@lowers("Where")
def where(ctx: LoweringContext, node: ir.Node):
    """select(cond, a, b) with numpy broadcasting."""
    return mb.select(cond=ctx.tensor(node, 0), a=ctx.tensor(node, 1), b=ctx.tensor(node, 2),
                     name=ctx.name(node))


@lowers("Cast")
def cast(ctx: LoweringContext, node: ir.Node):
    """Cast; int64 becomes int32 and double becomes fp32 (Core ML has neither)."""
    x = ctx.tensor(node, 0)
    to = ir.DataType(attr(node, "to"))
    if to not in _CAST:
        raise ctx.error(f"cast to {to} is not supported")
    if types.builtin_to_string(x.dtype) == _CAST[to]:
        return x
    return mb.cast(x=x, dtype=_CAST[to], name=ctx.name(node))


@lowers("Softmax", "LogSoftmax")
def softmax(ctx: LoweringContext, node: ir.Node):
    """Softmax on one axis (opset 13+), or on the flattened trailing axes (older opsets)."""
    x, rank = ctx.tensor(node, 0), ctx.rank(node, 0)
    axis = int(attr(node, "axis", -1 if ctx.opset >= 13 else 1))
    axis = axis + rank if axis < 0 else axis
    name = None if node.op_type == "LogSoftmax" else ctx.name(node)
    if ctx.opset >= 13 or axis == rank - 1:
        y = mb.softmax(x=x, axis=axis, name=name) if name else mb.softmax(x=x, axis=axis)
    else:  # opset < 13 coerces to 2-D at axis
        shape = ctx.shape(node, 0)
        flat = mb.reshape(x=x, shape=[int(np.prod(shape[:axis])), -1])
        y = mb.reshape(x=mb.softmax(x=flat, axis=1), shape=list(shape))
    return mb.log(x=y, name=ctx.name(node)) if node.op_type == "LogSoftmax" else y


_REDUCE = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max",
           "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod", "ReduceL2": "reduce_l2_norm",
           "ReduceL1": "reduce_l1_norm", "ReduceSumSquare": "reduce_sum_square"}


@lowers(*_REDUCE)
def reduce(ctx: LoweringContext, node: ir.Node):
    """Reductions with axes as an attribute (older opsets) or an input (ReduceSum 13+, others 18+)."""
    x, rank = ctx.tensor(node, 0), ctx.rank(node, 0)
    axes_as_input = ctx.opset >= (13 if node.op_type == "ReduceSum" else 18)
    if axes_as_input:
        axes = None if ctx.raw(node, 1) is None else ctx.need_const(node, 1, "axes").tolist()
    else:
        axes = attr(node, "axes")
    if not axes:
        if attr(node, "noop_with_empty_axes", 0):
            return x
        axes = list(range(rank))
    axes = sorted(int(a) + rank if a < 0 else int(a) for a in axes)
    keep = bool(attr(node, "keepdims", 1))
    return getattr(mb, _REDUCE[node.op_type])(x=x, axes=axes, keep_dims=keep, name=ctx.name(node))


@lowers("ArgMax", "ArgMin")
def arg_reduce(ctx: LoweringContext, node: ir.Node):
    """Index of the extreme value (int32 on the Core ML side)."""
    if attr(node, "select_last_index", 0):
        raise ctx.error("select_last_index=1 is not supported")
    op = mb.reduce_argmax if node.op_type == "ArgMax" else mb.reduce_argmin
    return op(x=ctx.tensor(node, 0), axis=int(attr(node, "axis", 0)),
              keep_dims=bool(attr(node, "keepdims", 1)), name=ctx.name(node))
