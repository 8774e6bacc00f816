"""Resize/Upsample: the ONNX coordinate modes that MIL's resizing ops express exactly.

* nearest, integer up-scaling: ``asymmetric`` + ``floor``, or ``half_pixel``/``pytorch_half_pixel``
  + ``round_prefer_floor``/``round_prefer_ceil``, all pick source index ``floor(o / s)`` when
  ``s`` is an integer -> ``upsample_nearest_neighbor``.
* linear -> ``resize_bilinear`` with the sampling mode that has ONNX's grid:
  ``align_corners`` -> STRICT_ALIGN_CORNERS, ``asymmetric`` -> DEFAULT (spacing in/out),
  ``half_pixel`` (and ``pytorch_half_pixel`` when the output has more than one pixel) ->
  UNALIGN_CORNERS. With ``scales`` given, ONNX uses the scale itself in the grid, so it must
  equal out/in exactly.

Anything else (cubic, antialias, down-scaling nearest, other modes) raises LoweringError.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb

from irq.backends.coreml.context import LoweringContext, attr
from irq.backends.coreml.registry import lowers

_NEAREST_OK = {("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
               ("half_pixel", "round_prefer_ceil"), ("pytorch_half_pixel", "round_prefer_floor"),
               ("pytorch_half_pixel", "round_prefer_ceil")}
_LINEAR_MODES = {"align_corners": "STRICT_ALIGN_CORNERS", "asymmetric": "DEFAULT",
                 "half_pixel": "UNALIGN_CORNERS", "pytorch_half_pixel": "UNALIGN_CORNERS"}


def _target(ctx: LoweringContext, node: ir.Node, in_shape: tuple[int, ...]) -> tuple[list[int], list[float] | None]:
    """Output size and the scales ONNX uses in its grid (None when sizes were given)."""
    if node.op_type == "Upsample" or ctx.opset < 11:
        scales = attr(node, "scales") if ctx.opset < 9 else ctx.need_const(node, 1, "scales")
        sizes = None
    else:
        scales = ctx.const(node, 2) if ctx.raw(node, 2) is not None else None
        sizes = ctx.const(node, 3) if ctx.raw(node, 3) is not None else None
        if scales is not None and scales.size == 0:
            scales = None
        if scales is None and sizes is None:
            raise ctx.error("scales or sizes must be constants")
    if attr(node, "axes") is not None:
        raise ctx.error("the axes attribute is not supported")
    if sizes is not None and sizes.size:
        return [int(s) for s in sizes], None
    scales = [float(s) for s in np.asarray(scales).reshape(-1)]
    return [int(np.floor(d * s)) for d, s in zip(in_shape, scales, strict=True)], scales


@lowers("Resize", "Upsample")
def resize(ctx: LoweringContext, node: ir.Node):
    """Nearest (integer factors) or bilinear resize of the last two axes of a 4-D tensor."""
    in_shape = ctx.shape(node, 0)
    if len(in_shape) != 4:
        raise ctx.error(f"only 4-D (NCHW) resize is supported, got rank {len(in_shape)}")
    if attr(node, "antialias", 0):
        raise ctx.error("antialias=1 is not supported")
    out, scales = _target(ctx, node, in_shape)
    if list(out[:2]) != list(in_shape[:2]):
        raise ctx.error("resizing the batch or channel axis is not supported")
    mode = attr(node, "mode", "nearest")
    coord = attr(node, "coordinate_transformation_mode", "half_pixel" if ctx.opset >= 11 else "asymmetric")
    spatial = zip(out[2:], in_shape[2:], scales[2:] if scales else [], strict=False)
    if scales is not None and any(abs(o / d - s) > 1e-6 for o, d, s in spatial):
        raise ctx.error(f"scales {scales} do not give whole output sizes; use sizes")
    x = ctx.tensor(node, 0)
    if mode == "nearest":
        nearest = attr(node, "nearest_mode", "round_prefer_floor")
        factors = [o / d for o, d in zip(out[2:], in_shape[2:], strict=True)]
        if any(f != int(f) or f < 1 for f in factors) or (coord, nearest) not in _NEAREST_OK:
            raise ctx.error(f"nearest resize needs integer up-scaling and a floor-equivalent grid; "
                            f"got factors {factors}, {coord}/{nearest}")
        return mb.upsample_nearest_neighbor(x=x, scale_factor_height=int(factors[0]),
                                            scale_factor_width=int(factors[1]), name=ctx.name(node))
    if mode in ("linear", "bilinear"):
        if coord not in _LINEAR_MODES or (coord == "pytorch_half_pixel" and min(out[2:]) == 1):
            raise ctx.error(f"linear resize with coordinate_transformation_mode={coord!r} is not supported")
        return mb.resize_bilinear(x=x, target_size_height=out[2], target_size_width=out[3],
                                  sampling_mode=_LINEAR_MODES[coord], name=ctx.name(node))
    raise ctx.error(f"resize mode {mode!r} is not supported")
