"""Shape and data-movement lowerings: reshape, slice, gather, pad, resize, ...

Shapes are static in these programs, so every ONNX shape argument (0 and -1 in Reshape, INT_MAX
ends in Slice, negative axes) is resolved to concrete integers here, from the input's shape.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from irq.backends.coreml.context import LoweringContext, QuantWeight, attr, is_var
from irq.backends.coreml.registry import lowers


def _axes(ctx: LoweringContext, node: ir.Node, index: int, since: int) -> list[int] | None:
    """An axes argument: an input from opset ``since``, an attribute before."""
    if ctx.opset >= since:
        return None if ctx.raw(node, index) is None else [int(a) for a in ctx.need_const(node, index, "axes")]
    a = attr(node, "axes")
    return None if a is None else [int(v) for v in a]


@lowers("Shape")
def shape(ctx: LoweringContext, node: ir.Node):
    """The static shape as an int64 constant (start/end from opset 15)."""
    dims = ctx.shape(node, 0)
    start, end = attr(node, "start", 0), attr(node, "end")
    return np.array(dims[start:end], np.int64)


@lowers("Size")
def size(ctx: LoweringContext, node: ir.Node):
    """The static element count as an int64 scalar."""
    return np.array(math.prod(ctx.shape(node, 0)), np.int64)


@lowers("Reshape")
def reshape(ctx: LoweringContext, node: ir.Node):
    """Reshape with ONNX's 0 (copy the input dim unless allowzero) and -1 (infer)."""
    in_shape = ctx.shape(node, 0)
    target = [int(d) for d in ctx.need_const(node, 1, "shape")]
    if not attr(node, "allowzero", 0):
        target = [in_shape[i] if d == 0 else d for i, d in enumerate(target)]
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(in_shape) // known
    return mb.reshape(x=ctx.tensor(node, 0), shape=target, name=ctx.name(node))


@lowers("Flatten")
def flatten(ctx: LoweringContext, node: ir.Node):
    """To 2-D at ``axis`` (default 1)."""
    in_shape = ctx.shape(node, 0)
    axis = int(attr(node, "axis", 1))
    axis = axis + len(in_shape) if axis < 0 else axis
    return mb.reshape(x=ctx.tensor(node, 0), shape=[math.prod(in_shape[:axis]), math.prod(in_shape[axis:])],
                      name=ctx.name(node))


@lowers("Transpose")
def transpose(ctx: LoweringContext, node: ir.Node):
    """Permute axes (default: reverse them)."""
    perm = [int(p) for p in attr(node, "perm") or list(range(ctx.rank(node, 0)))[::-1]]
    x = ctx.raw(node, 0)
    if isinstance(x, QuantWeight):  # a weight stays integer: transpose its data, not a float copy
        return x.transposed(tuple(perm))
    return mb.transpose(x=ctx.tensor(node, 0), perm=perm, name=ctx.name(node))


@lowers("Squeeze")
def squeeze(ctx: LoweringContext, node: ir.Node):
    """Drop size-1 axes (all of them when no axes are given)."""
    in_shape = ctx.shape(node, 0)
    axes = _axes(ctx, node, 1, 13)
    if axes is None:
        axes = [i for i, d in enumerate(in_shape) if d == 1]
    axes = sorted(a + len(in_shape) if a < 0 else a for a in axes)
    if not axes:
        return ctx.tensor(node, 0)
    return mb.squeeze(x=ctx.tensor(node, 0), axes=axes, name=ctx.name(node))


@lowers("Unsqueeze")
def unsqueeze(ctx: LoweringContext, node: ir.Node):
    """Insert size-1 axes, negative axes counted in the output rank."""
    out_rank = ctx.rank(node, 0) + len(_axes(ctx, node, 1, 13) or [])
    axes = sorted(a + out_rank if a < 0 else a for a in _axes(ctx, node, 1, 13) or [])
    return mb.expand_dims(x=ctx.tensor(node, 0), axes=axes, name=ctx.name(node))


@lowers("Concat")
def concat(ctx: LoweringContext, node: ir.Node):
    """Join along ``axis``."""
    rank = ctx.rank(node, 0)
    axis = int(attr(node, "axis"))
    values = [ctx.tensor(node, i) for i in range(len(node.inputs)) if 0 not in ctx.shape(node, i)]
    return mb.concat(values=values, axis=axis + rank if axis < 0 else axis, name=ctx.name(node))


@lowers("Split")
def split(ctx: LoweringContext, node: ir.Node):
    """Split by explicit sizes (attribute before opset 13, input after) or into equal parts."""
    in_shape = ctx.shape(node, 0)
    axis = int(attr(node, "axis", 0))
    axis = axis + len(in_shape) if axis < 0 else axis
    if ctx.opset >= 13:
        sizes = None if ctx.raw(node, 1) is None else ctx.need_const(node, 1, "split").tolist()
    else:
        sizes = attr(node, "split")
    if sizes is None:  # equal parts; opset 18's num_outputs makes the last one smaller
        parts = len(node.outputs)
        step = -(-in_shape[axis] // parts)
        sizes = [step] * (parts - 1) + [in_shape[axis] - step * (parts - 1)]
    outs = mb.split(x=ctx.tensor(node, 0), split_sizes=[int(s) for s in sizes], axis=axis, name=ctx.name(node))
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


@lowers("Slice")
def slice_(ctx: LoweringContext, node: ir.Node):
    """Strided slice; starts/ends/axes/steps are constants, clamped the way ONNX clamps them."""
    in_shape = ctx.shape(node, 0)
    rank = len(in_shape)
    if ctx.opset >= 10:
        starts, ends = ctx.need_const(node, 1, "starts"), ctx.need_const(node, 2, "ends")
        axes = ctx.const(node, 3) if ctx.raw(node, 3) is not None else np.arange(len(starts))
        steps = ctx.const(node, 4) if ctx.raw(node, 4) is not None else np.ones(len(starts), np.int64)
        if axes is None or steps is None:
            raise ctx.error("axes and steps must be constants")
    else:
        starts, ends = attr(node, "starts"), attr(node, "ends")
        axes = attr(node, "axes", list(range(len(starts))))
        steps = [1] * len(starts)
    begin, end, stride = [0] * rank, list(in_shape), [1] * rank
    end_mask = [False] * rank
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = int(a) + rank if a < 0 else int(a)
        # Python's slice.indices clamps exactly like ONNX (INT64_MAX ends, negative steps).
        b, en, step = slice(int(s), int(e), int(st)).indices(in_shape[a])
        if len(range(b, en, step)) == 0:
            raise ctx.error(f"slice on axis {a} is empty; Core ML has no empty tensors")
        begin[a], end[a], stride[a] = b, en, step
        end_mask[a] = step < 0 and en < 0  # run to the start: -1 would mean "last" in MIL
    return mb.slice_by_index(x=ctx.tensor(node, 0), begin=begin, end=end, stride=stride,
                             end_mask=end_mask, name=ctx.name(node))


@lowers("Gather")
def gather(ctx: LoweringContext, node: ir.Node):
    """Gather along ``axis``: embeddings (constant table, run-time ids) or constant indices."""
    axis = int(attr(node, "axis", 0))
    in_shape = ctx.shape(node, 0)
    axis = axis + len(in_shape) if axis < 0 else axis
    indices = ctx.const(node, 1)
    if indices is not None:
        indices = np.where(indices < 0, indices + in_shape[axis], indices).astype(np.int32)
    else:
        indices = ctx.tensor(node, 1)
    x = ctx.tensor(node, 0)
    if is_var(x) and x.dtype == types.bool:  # MIL gathers numbers only (masks built by indexing)
        picked = mb.gather(x=mb.cast(x=x, dtype="int32"), indices=indices, axis=axis)
        return mb.cast(x=picked, dtype="bool", name=ctx.name(node))
    return mb.gather(x=x, indices=indices, axis=axis, name=ctx.name(node))


@lowers("GatherElements")
def gather_elements(ctx: LoweringContext, node: ir.Node):
    """Gather along an axis with an index tensor of the output's shape."""
    axis = int(attr(node, "axis", 0))
    rank = ctx.rank(node, 0)
    return mb.gather_along_axis(x=ctx.tensor(node, 0), indices=ctx.tensor(node, 1),
                                axis=axis + rank if axis < 0 else axis, name=ctx.name(node))


@lowers("Expand")
def expand(ctx: LoweringContext, node: ir.Node):
    """Broadcast to a shape: reshape to the output rank, then tile the size-1 axes."""
    in_shape = ctx.shape(node, 0)
    target = [int(d) for d in ctx.need_const(node, 1, "shape")]
    out_shape = list(np.broadcast_shapes(in_shape, tuple(target)))
    x = ctx.tensor(node, 0)
    padded = [1] * (len(out_shape) - len(in_shape)) + list(in_shape)
    if len(padded) != len(in_shape):
        x = mb.reshape(x=x, shape=padded)
    reps = [o // p for o, p in zip(out_shape, padded, strict=True)]
    return mb.tile(x=x, reps=reps, name=ctx.name(node)) if any(r != 1 for r in reps) else x


@lowers("Tile")
def tile(ctx: LoweringContext, node: ir.Node):
    """Repeat along each axis."""
    reps = [int(r) for r in ctx.need_const(node, 1, "repeats")]
    return mb.tile(x=ctx.tensor(node, 0), reps=reps, name=ctx.name(node))


@lowers("Pad")
def pad(ctx: LoweringContext, node: ir.Node):
    """constant/reflect/edge padding; pads are ONNX ``[begins..., ends...]``, MIL interleaved."""
    rank = ctx.rank(node, 0)
    if ctx.opset >= 11:
        pads = [int(p) for p in ctx.need_const(node, 1, "pads")]
        value = ctx.const(node, 2)
        value = 0.0 if value is None or value.size == 0 else float(value.reshape(-1)[0])
        axes = ctx.const(node, 3) if ctx.raw(node, 3) is not None else None
    else:
        pads, value, axes = list(attr(node, "pads")), float(attr(node, "value", 0.0)), None
    full = [0] * 2 * rank
    axes = list(range(rank)) if axes is None else [int(a) + rank if a < 0 else int(a) for a in axes]
    for i, a in enumerate(axes):
        full[a], full[rank + a] = pads[i], pads[len(axes) + i]
    if any(p < 0 for p in full):
        raise ctx.error("negative pads (cropping) are not supported")
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(attr(node, "mode", "constant"))
    if mode is None:
        raise ctx.error(f"pad mode {attr(node, 'mode')!r} is not supported")
    # MIL pads the trailing N axes: start at the first padded one (reflect/replicate need it).
    first = next((a for a in range(rank) if full[a] or full[rank + a]), rank - 1)
    mil = [p for a in range(first, rank) for p in (full[a], full[rank + a])]
    return mb.pad(x=ctx.tensor(node, 0), pad=mil, mode=mode, constant_val=np.float32(value), name=ctx.name(node))


@lowers("ConstantOfShape")
def constant_of_shape(ctx: LoweringContext, node: ir.Node):
    """A filled constant (its shape must be known: Core ML shapes are static here)."""
    dims = ctx.need_const(node, 0, "shape")
    value = attr(node, "value")
    fill = value.numpy().reshape(-1) if value is not None else np.zeros(1, np.float32)
    return np.full([int(d) for d in dims], fill[0], fill.dtype)


@lowers("DepthToSpace")
def depth_to_space(ctx: LoweringContext, node: ir.Node):
    """Channels into blocks: CRD is MIL's pixel_shuffle; DCR first reorders the channels into CRD order."""
    block = int(attr(node, "blocksize"))
    mode = attr(node, "mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    x = ctx.tensor(node, 0)
    if mode == "DCR":
        channels = ctx.shape(node, 0)[1] // (block * block)
        # CRD channel c * b^2 + k holds what DCR keeps at k * C' + c
        order = np.array([k * channels + c for c in range(channels) for k in range(block * block)], np.int32)
        x = mb.gather(x=x, indices=order, axis=1, name=ctx.name(node) + "_crd")
    elif mode != "CRD":
        raise ctx.error(f"DepthToSpace node {node.name!r}: mode {mode!r} is not DCR or CRD")
    return mb.pixel_shuffle(x=x, upscale_factor=block, name=ctx.name(node))
