"""Layer lowerings: convolutions, Gemm/MatMul, pooling and normalization.

ONNX pads are ``[begin_0, begin_1, ..., end_0, end_1, ...]`` (for 2-D: ``[t, l, b, r]``); MIL's
are interleaved per dimension, ``[begin_0, end_0, begin_1, end_1]`` (``[t, b, l, r]``). auto_pad
is resolved to explicit pads here from the static input shape, so MIL always sees ``custom``.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb

from irq.backends.coreml.context import LoweringContext, QuantWeight, attr, is_var
from irq.backends.coreml.registry import lowers


def onnx_pads(ctx: LoweringContext, node: ir.Node, spatial: tuple[int, ...], kernel: list[int],
              strides: list[int], dilations: list[int]) -> list[int]:
    """Explicit ONNX-layout pads for a conv/pool node, resolving auto_pad."""
    n = len(spatial)
    auto = attr(node, "auto_pad", "NOTSET")
    if auto == "NOTSET":
        return [int(p) for p in attr(node, "pads", [0] * 2 * n)]
    if auto == "VALID":
        return [0] * 2 * n
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.error(f"unknown auto_pad {auto!r}")
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else big)
        ends.append(big if auto == "SAME_UPPER" else small)
    return begins + ends


def mil_pads(pads: list[int]) -> list[int]:
    """ONNX ``[b0, b1, e0, e1]`` -> MIL ``[b0, e0, b1, e1]``."""
    n = len(pads) // 2
    return [p for i in range(n) for p in (pads[i], pads[n + i])]


def _bias(ctx: LoweringContext, node: ir.Node, index: int):
    """A bias operand, or None when absent."""
    return None if ctx.raw(node, index) is None else ctx.tensor(node, index)


@lowers("Conv")
def conv(ctx: LoweringContext, node: ir.Node):
    """Conv (1-3 spatial dims, groups/depthwise, dilations, pads, auto_pad)."""
    in_shape, w_shape = ctx.shape(node, 0), ctx.shape(node, 1)
    n = len(w_shape) - 2
    strides, dil = attr(node, "strides", [1] * n), attr(node, "dilations", [1] * n)
    pads = onnx_pads(ctx, node, in_shape[2:], list(w_shape[2:]), strides, dil)
    bias = _bias(ctx, node, 2)
    kwargs = {} if is_var(bias) else {"name": ctx.name(node)}
    if bias is not None and not is_var(bias):
        kwargs["bias"] = bias
    y = mb.conv(x=ctx.tensor(node, 0), weight=ctx.weight(node, 1), strides=strides, pad_type="custom",
                pad=mil_pads(pads), dilations=dil, groups=int(attr(node, "group", 1)), **kwargs)
    if is_var(bias):  # a run-time bias (MIL's conv bias must be constant)
        y = mb.add(x=y, y=mb.reshape(x=bias, shape=[-1] + [1] * n), name=ctx.name(node))
    return y


@lowers("ConvTranspose")
def conv_transpose(ctx: LoweringContext, node: ir.Node):
    """ConvTranspose with pads, output_padding, output_shape and auto_pad as ONNX defines them."""
    in_shape, w_shape = ctx.shape(node, 0), ctx.shape(node, 1)
    n = len(w_shape) - 2
    strides, dil = attr(node, "strides", [1] * n), attr(node, "dilations", [1] * n)
    out_pad = attr(node, "output_padding", [0] * n)
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(in_shape[2:], strides, w_shape[2:], dil, strict=True)]
    auto, out_shape = attr(node, "auto_pad", "NOTSET"), attr(node, "output_shape")
    if out_shape is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [i * s for i, s in zip(in_shape[2:], strides, strict=True)]
    if out_shape is not None:
        totals = [f + op - o for f, op, o in zip(full, out_pad, out_shape[-n:], strict=True)]
        upper = auto == "SAME_UPPER"
        pads = ([t // 2 if upper else t - t // 2 for t in totals]
                + [t - t // 2 if upper else t // 2 for t in totals])
    else:
        pads = [0] * 2 * n if auto == "VALID" else [int(p) for p in attr(node, "pads", [0] * 2 * n)]
    if any(p < 0 for p in pads):
        raise ctx.error(f"negative padding {pads} is not supported")
    # output_padding shrinks the end crop; where it exceeds it, the extra rows get only the bias.
    ends = [max(e - op, 0) for e, op in zip(pads[n:], out_pad, strict=True)]
    extra = [max(op - e, 0) for e, op in zip(pads[n:], out_pad, strict=True)]
    bias = _bias(ctx, node, 2)
    fused = bias is not None and not is_var(bias) and not any(extra)
    y = mb.conv_transpose(x=ctx.tensor(node, 0), weight=ctx.weight(node, 1), pad_type="custom",
                          pad=mil_pads(pads[:n] + ends), strides=strides, dilations=dil,
                          groups=int(attr(node, "group", 1)), **({"bias": bias} if fused else {}))
    if any(extra):
        y = mb.pad(x=y, pad=[p for e in extra for p in (0, e)])
    if bias is not None and not fused:
        y = mb.add(x=y, y=mb.reshape(x=bias, shape=[-1] + [1] * n))
    return y


@lowers("Gemm")
def gemm(ctx: LoweringContext, node: ir.Node):
    """Alpha * A' B' + beta * C as ``linear`` (weight laid out [N, K]) plus what it cannot fuse."""
    alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
    a = ctx.tensor(node, 0)
    if attr(node, "transA", 0):
        a = mb.transpose(x=a, perm=[1, 0])
    trans_b = bool(attr(node, "transB", 0))
    n_out = ctx.shape(node, 1)[0 if trans_b else 1]
    c, bias = ctx.raw(node, 2), None
    if isinstance(c, np.ndarray) and alpha == 1.0 and c.size in (1, n_out) and c.shape[:-1] in ((), (1,)):
        bias, c = np.broadcast_to(beta * c.astype(np.float32).reshape(-1), (n_out,)).copy(), None
    if is_var(ctx.raw(node, 1)):
        y = mb.matmul(x=a, y=ctx.tensor(node, 1), transpose_y=trans_b)
        y = y if bias is None else mb.add(x=y, y=bias)
    else:
        w = ctx.weight(node, 1, None if trans_b else (1, 0))
        y = mb.linear(x=a, weight=w, **({} if bias is None else {"bias": bias}))
    if alpha != 1.0:
        y = mb.mul(x=y, y=np.float32(alpha))
    if c is not None:
        cc = ctx.tensor(node, 2)
        y = mb.add(x=y, y=cc if beta == 1.0 else mb.mul(x=cc, y=np.float32(beta)))
    return y


@lowers("MatMul")
def matmul(ctx: LoweringContext, node: ir.Node):
    """Numpy matmul; a constant 2-D right operand with a rank <= 3 left one becomes ``linear``."""
    b_raw = ctx.raw(node, 1)
    a_rank = ctx.rank(node, 0)
    if isinstance(b_raw, (np.ndarray, QuantWeight)) and len(b_raw.shape) == 2 and a_rank <= 3:
        # linear's weight is [N, K], the layout Core ML's quantized kernels expect; the int8
        # data is transposed here, once, and the record notes it for the read-back.
        return mb.linear(x=ctx.tensor(node, 0), weight=ctx.weight(node, 1, (1, 0)), name=ctx.name(node))
    return mb.matmul(x=ctx.tensor(node, 0), y=ctx.tensor(node, 1), name=ctx.name(node))


@lowers("MaxPool", "AveragePool")
def pool(ctx: LoweringContext, node: ir.Node):
    """Max/average pooling with pads, auto_pad, ceil_mode and count_include_pad."""
    if len(node.outputs) > 1 and node.outputs[1].name:
        raise ctx.error("MaxPool's Indices output is not supported")
    shape = ctx.shape(node, 0)
    spatial = shape[2:]
    kernel, n = list(attr(node, "kernel_shape")), len(spatial)
    strides = attr(node, "strides", [1] * n)
    if any(d != 1 for d in attr(node, "dilations", [1] * n)):
        raise ctx.error("dilated pooling is not supported by Core ML")
    pads = onnx_pads(ctx, node, spatial, kernel, strides, [1] * n)
    is_max = node.op_type == "MaxPool"
    include_pad = bool(attr(node, "count_include_pad", 0)) and not is_max
    x = ctx.tensor(node, 0)
    if attr(node, "ceil_mode", 0):
        extra = []
        for i, (size, k, s) in enumerate(zip(spatial, kernel, strides, strict=True)):
            span = size + pads[i] + pads[n + i] - k
            out = -(-span // s) + 1
            if (out - 1) * s >= size + pads[i]:  # the last window must start inside the input
                out -= 1
            extra.append(max((out - 1) * s + k - (size + pads[i] + pads[n + i]), 0))
        pads = pads[:n] + [p + e for p, e in zip(pads[n:], extra, strict=True)]
        if any(extra) and include_pad:
            # onnxruntime divides ceil-mode windows by the whole kernel, overhang included, so the
            # padding becomes real zeros (MIL's ceil_mode divides as PyTorch does, without it).
            x = mb.pad(x=x, pad=[0, 0, 0, 0, *mil_pads(pads)])
            pads = [0] * 2 * n
        # Otherwise the overhang is padding: ignored by max, excluded from the mean.
    common = {"x": x, "kernel_sizes": kernel, "strides": strides, "pad_type": "custom",
              "pad": mil_pads(pads), "name": ctx.name(node)}
    if is_max:
        return mb.max_pool(**common)
    return mb.avg_pool(exclude_padding_from_average=not include_pad, **common)


@lowers("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: LoweringContext, node: ir.Node):
    """Mean or max over every spatial axis, keeping them as size 1."""
    axes = list(range(2, ctx.rank(node, 0)))
    op = mb.reduce_mean if node.op_type == "GlobalAveragePool" else mb.reduce_max
    return op(x=ctx.tensor(node, 0), axes=axes, keep_dims=True, name=ctx.name(node))


@lowers("LayerNormalization")
def layer_norm(ctx: LoweringContext, node: ir.Node):
    """Normalise over axes [axis, rank) with ONNX's defaults (axis -1, epsilon 1e-5)."""
    if any(o.name for o in node.outputs[1:]):
        raise ctx.error("LayerNormalization's Mean/InvStdDev outputs are not supported")
    shape = ctx.shape(node, 0)
    axis = int(attr(node, "axis", -1))
    axis = axis + len(shape) if axis < 0 else axis
    norm_shape = list(shape[axis:])
    kwargs = {}
    for key, index in (("gamma", 1), ("beta", 2)):
        p = ctx.const(node, index)
        if p is not None:
            kwargs[key] = np.broadcast_to(p.astype(np.float32), norm_shape).copy()
        elif ctx.raw(node, index) is not None:
            raise ctx.error(f"{key} must be a constant")
    return mb.layer_norm(x=ctx.tensor(node, 0), axes=list(range(axis, len(shape))),
                         epsilon=np.float32(attr(node, "epsilon", 1e-5)), name=ctx.name(node), **kwargs)


@lowers("BatchNormalization")
def batch_norm(ctx: LoweringContext, node: ir.Node):
    """Inference-mode batch norm (constant statistics)."""
    if attr(node, "training_mode", 0):
        raise ctx.error("training-mode BatchNormalization is not supported")
    gamma, beta, mean, var = (ctx.need_const(node, i, w).astype(np.float32)
                              for i, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))
    return mb.batch_norm(x=ctx.tensor(node, 0), mean=mean, variance=var, gamma=gamma, beta=beta,
                         epsilon=np.float32(attr(node, "epsilon", 1e-5)), name=ctx.name(node))


@lowers("InstanceNormalization")
def instance_norm(ctx: LoweringContext, node: ir.Node):
    """Per-sample, per-channel normalisation."""
    return mb.instance_norm(x=ctx.tensor(node, 0), gamma=ctx.need_const(node, 1, "scale").astype(np.float32),
                            beta=ctx.need_const(node, 2, "B").astype(np.float32),
                            epsilon=np.float32(attr(node, "epsilon", 1e-5)), name=ctx.name(node))
