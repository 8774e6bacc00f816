"""numpy kernels for the MIL ops with windows or grids: conv, conv_transpose, pooling, resizing.

Written from the MIL op definitions (coremltools ``mil/ops/defs``), not from ONNX, so that the
read-back check compares two independent readings of the semantics. Everything computes in
float32; the evaluator rounds each op's result to the dtype the program declares.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def pad_pairs(pad_type: str, pad, spatial, kernel, strides, dilations) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis for MIL's pad_type/pad."""
    n = len(spatial)
    if pad_type == "custom":
        return [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(n)]
    if pad_type == "valid":
        return [(0, 0)] * n
    pairs = []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        pairs.append((small, big) if pad_type == "same" else (big, small))
    return pairs


def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """MIL conv: weight [C_out, C_in/groups, *K], any of 1-3 spatial dims."""
    n = x.ndim - 2
    kernel = weight.shape[2:]
    strides = list(strides) if strides is not None else [1] * n
    dilations = list(dilations) if dilations is not None else [1] * n
    pairs = pad_pairs(pad_type, pad, x.shape[2:], kernel, strides, dilations)
    xp = np.pad(x, [(0, 0), (0, 0), *pairs])
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + n)))
    win = win[(slice(None), slice(None), *(slice(None, None, s) for s in strides),
               *(slice(None, None, d) for d in dilations))]
    batch = x.shape[0]
    out = win.shape[2:2 + n]
    g, c_out = int(groups), weight.shape[0]
    # im2col as one batched matrix product per group (einsum would not use BLAS here).
    cols = win.transpose(0, *range(2, 2 + n), 1, *range(2 + n, 2 + 2 * n))
    cols = cols.reshape(batch * math.prod(out), g, -1).transpose(1, 0, 2)
    w = weight.reshape(g, c_out // g, -1).transpose(0, 2, 1)
    y = np.matmul(cols, w).transpose(1, 0, 2).reshape(batch, *out, c_out)
    y = np.moveaxis(y, -1, 1)
    return y if bias is None else y + np.reshape(bias, [-1] + [1] * n)


def conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None,
                   dilations=None, groups=1):
    """MIL conv_transpose: weight [C_in, C_out/groups, *K]; output cropped by ``pad``."""
    n = x.ndim - 2
    kernel = weight.shape[2:]
    strides = list(strides) if strides is not None else [1] * n
    dilations = list(dilations) if dilations is not None else [1] * n
    batch, c_in = x.shape[:2]
    g = int(groups)
    c_og = weight.shape[1]
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(x.shape[2:], strides, kernel, dilations, strict=True)]
    y = np.zeros((batch, g, c_og, *full), np.float32)
    xg = x.reshape(batch, g, c_in // g, *x.shape[2:])
    wg = weight.reshape(g, c_in // g, c_og, *kernel)
    for pos in np.ndindex(*kernel):
        contrib = np.einsum("agc...,gco->ago...", xg, wg[(slice(None),) * 3 + pos])
        where = tuple(slice(p * d, p * d + (i - 1) * s + 1, s)
                      for p, d, i, s in zip(pos, dilations, x.shape[2:], strides, strict=True))
        y[(slice(None),) * 3 + where] += contrib
    y = y.reshape(batch, g * c_og, *full)
    if pad_type == "same":
        pairs = [((f - i * s) // 2, 0) for f, i, s in zip(full, x.shape[2:], strides, strict=True)]
    elif pad_type == "custom":
        pairs = [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(n)]
    else:
        pairs = [(0, 0)] * n
    if output_shape is not None:
        sizes = list(output_shape)[2:]
    else:
        sizes = [f - b - e for f, (b, e) in zip(full, pairs, strict=True)]
    y = y[(slice(None), slice(None), *(slice(b, b + s) for (b, _), s in zip(pairs, sizes, strict=True)))]
    return y if bias is None else y + np.reshape(bias, [-1] + [1] * n)


def pool(kind: str, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False,
         exclude_padding_from_average=False):
    """max_pool / avg_pool / l2_pool; ceil mode and the average's divisor as PyTorch defines them."""
    n = x.ndim - 2
    kernel = [int(k) for k in kernel_sizes]
    strides = list(strides) if strides is not None else [1] * n
    spatial = x.shape[2:]
    pairs = pad_pairs(pad_type, pad, spatial, kernel, strides, [1] * n)
    extra = []
    for size, k, s, (b, e) in zip(spatial, kernel, strides, pairs, strict=True):
        span = size + b + e - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + b and (b > 0 or e > 0):
            out -= 1
        extra.append(max((out - 1) * s + k - (size + b + e), 0))
    widths = [(b, e + x_) for (b, e), x_ in zip(pairs, extra, strict=True)]
    inside = np.pad(np.ones(spatial, np.float32), widths)  # 1 on real input
    padded = np.pad(np.ones([s + b + e for s, (b, e) in zip(spatial, pairs, strict=True)], np.float32),
                    [(0, x_) for x_ in extra])  # 1 on input and declared padding
    axes = tuple(range(-n, 0))

    def windows(a: np.ndarray) -> np.ndarray:
        w = sliding_window_view(a, kernel, axis=tuple(range(a.ndim - n, a.ndim)))  # type: ignore[call-overload]
        return w[(Ellipsis, *(slice(None, None, s) for s in strides), *([slice(None)] * n))]

    xw = windows(np.pad(x.astype(np.float32), [(0, 0), (0, 0), *widths]))
    iw = windows(inside)
    if kind == "max_pool":
        return np.where(iw > 0, xw, -np.inf).max(axis=axes)
    if kind == "l2_pool":
        return np.sqrt((xw * xw * iw).sum(axis=axes))
    count = iw.sum(axis=axes) if exclude_padding_from_average else windows(padded).sum(axis=axes)
    return (xw * iw).sum(axis=axes) / count


def _grid(size_in: int, size_out: int, mode: str) -> np.ndarray:
    """Source coordinates of resize_bilinear's sampling modes (see its MIL docstring)."""
    i = np.arange(size_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            g = np.full(1, (size_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            g = i * (size_in - 1) / (size_out - 1)
    elif mode == "DEFAULT":
        g = i * (size_in - size_in / size_out) / (size_out - 1) if size_out > 1 else np.zeros(1)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, size_in - 1) / size_out
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        spacing = size_in / size_out
        g = i * spacing + 0.5 * spacing - 0.5
    else:
        raise ValueError(f"unknown sampling mode {mode}")
    return np.clip(g, 0, size_in - 1)


def _lerp_axis(x: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    lo = np.floor(coords).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (coords - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    return np.take(x, lo, axis=axis) * (1 - frac.reshape(shape)) + np.take(x, hi, axis=axis) * frac.reshape(shape)


def resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    """Bilinear resize of the last two axes to a target size."""
    x = x.astype(np.float32)
    y = _lerp_axis(x, _grid(x.shape[-2], int(target_size_height), sampling_mode), x.ndim - 2)
    return _lerp_axis(y, _grid(x.shape[-1], int(target_size_width), sampling_mode), x.ndim - 1)


def upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True,
                      half_pixel_centers=None):
    """Bilinear up-sampling by scale factors (align_corners or half-pixel grids)."""
    h, w = int(x.shape[-2] * scale_factor_height), int(x.shape[-1] * scale_factor_width)
    mode = "STRICT_ALIGN_CORNERS" if align_corners else "UNALIGN_CORNERS"
    return resize_bilinear(x, h, w, mode)


def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    """Nearest up-sampling: output pixel o reads input floor(o / scale)."""
    h, w = x.shape[-2:]
    rows = np.minimum(np.floor(np.arange(int(h * scale_factor_height)) / scale_factor_height), h - 1)
    cols = np.minimum(np.floor(np.arange(int(w * scale_factor_width)) / scale_factor_width), w - 1)
    return x[..., rows.astype(np.int64), :][..., cols.astype(np.int64)]


def pad(x, pad, mode="constant", constant_val=0.0):
    """MIL pad: ``pad`` covers the trailing len(pad)/2 axes, interleaved (begin, end)."""
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(n)]
    if mode == "constant":
        return np.pad(x, widths, constant_values=constant_val)
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])
