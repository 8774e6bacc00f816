"""A numpy evaluator of read-back MIL programs: Core ML's op semantics where Core ML cannot run.

Every op computes in float32 (fp16 inputs are widened) and its result is rounded to the dtype
the program declares for it, so an fp16 program is emulated as fp16 storage between ops with
fp32 arithmetic inside each op. Devices differ inside ops (the Neural Engine accumulates
differently), so this bounds lowering mistakes, not the last fp16 ulp. Rounding in
``quantize`` is half-to-even, as in ONNX QuantizeLinear.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from coremltools.converters.mil.mil import Program, Var, types

from irq.backends.coreml import mil_kernels as K
from irq.errors import VerificationError

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _f(a: Any) -> np.ndarray:
    """A float16 array widened to float32; anything else as an array."""
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype == np.float16 else a


def _bcast(v: Any, axis: int | None, rank: int) -> np.ndarray:
    """A scalar or per-``axis`` vector shaped to broadcast against a rank-``rank`` tensor."""
    v = _f(v)
    if v.ndim == 0 or axis is None:
        return v
    shape = [1] * rank
    shape[int(axis)] = v.shape[0]
    return v.reshape(shape)


def _quantize(input, scale, zero_point=None, axis=None, output_dtype="uint8"):
    info = np.iinfo(np.dtype(output_dtype))
    x = _f(input)
    zp = 0 if zero_point is None else _bcast(zero_point, axis, x.ndim).astype(np.float32)
    q = np.rint(x / _bcast(scale, axis, x.ndim)) + zp
    return np.clip(q, info.min, info.max).astype(output_dtype)


def _dequantize(input, scale, zero_point=None, axis=None):
    q = np.asarray(input).astype(np.float32)
    zp = 0 if zero_point is None else _bcast(zero_point, axis, q.ndim).astype(np.float32)
    return (q - zp) * _bcast(scale, axis, q.ndim)


def _blockwise(data, scale, offset=None):
    d = np.asarray(data).astype(np.float32)
    reps = [a // b for a, b in zip(d.shape, np.shape(scale), strict=True)]
    s = np.asarray(scale).astype(np.float32)
    for axis, r in enumerate(reps):
        s = np.repeat(s, r, axis=axis)
    o = 0 if offset is None else np.asarray(offset).astype(np.float32)
    if offset is not None:
        for axis, r in enumerate(reps):
            o = np.repeat(o, r, axis=axis)
    return (d - o) * s


def _slice(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    idx = []
    for i in range(len(begin)):
        b = None if begin_mask is not None and begin_mask[i] else int(begin[i])
        e = None if end_mask is not None and end_mask[i] else int(end[i])
        if squeeze_mask is not None and squeeze_mask[i]:
            idx.append(int(begin[i]))
        else:
            idx.append(slice(b, e, 1 if stride is None else int(stride[i])))
    return np.asarray(x)[tuple(idx)]


def _layer_norm(x, axes, gamma=None, beta=None, epsilon=1e-5):
    x = _f(x)
    axes = tuple(int(a) for a in axes)
    mean = x.mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + epsilon)
    y = y if gamma is None else y * _f(gamma)
    return y if beta is None else y + _f(beta)


def _channel(v, rank):
    return _f(v).reshape([-1] + [1] * (rank - 2))


def _batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    x = _f(x)
    y = (x - _channel(mean, x.ndim)) / np.sqrt(_channel(variance, x.ndim) + epsilon)
    y = y if gamma is None else y * _channel(gamma, x.ndim)
    return y if beta is None else y + _channel(beta, x.ndim)


def _instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    x = _f(x)
    axes = tuple(range(2, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + epsilon)
    y = y if gamma is None else y * _channel(gamma, x.ndim)
    return y if beta is None else y + _channel(beta, x.ndim)


def _gelu(x, mode="EXACT"):
    x = _f(x)
    if mode == "EXACT":
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return x / (1 + np.exp(-1.702 * x))


def _softmax(x, axis=-1):
    x = _f(x)
    e = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return e / e.sum(axis=int(axis), keepdims=True)


def _reduce(fn):
    def run(x, axes=None, keep_dims=False):
        return fn(_f(x), axis=None if axes is None else tuple(int(a) for a in axes), keepdims=bool(keep_dims))
    return run


def _matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = _f(x), _f(y)
    if transpose_x:
        x = np.swapaxes(x, -1, -2)
    if transpose_y:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _split(x, num_splits=None, split_sizes=None, axis=0):
    sizes = split_sizes if split_sizes is not None else [x.shape[int(axis)] // int(num_splits)] * int(num_splits)
    return np.split(x, np.cumsum(sizes)[:-1].astype(int), axis=int(axis))


def _concat(values, axis, interleave=False):
    axis = int(axis) % np.ndim(values[0])
    if not interleave:
        return np.concatenate(values, axis=axis)
    # interleave: output slice i*K + k along axis is slice i of the k-th input
    stacked = np.stack(values, axis=axis + 1)
    return stacked.reshape(*stacked.shape[:axis], -1, *stacked.shape[axis + 2:])


def _pixel_shuffle(x, upscale_factor):
    r = int(upscale_factor)
    n, c, h, w = np.shape(x)
    y = np.reshape(x, (n, c // (r * r), r, r, h, w)).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (r * r), h * r, w * r)


def _sigmoid(x):
    return 1 / (1 + np.exp(-_f(x)))


def _binary(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda x, y: fn(_f(x), _f(y))


def _unary(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda x: fn(_f(x))


def _with_bias(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """A conv-like kernel taking float32 x/weight/bias and its other arguments as they are."""
    def run(x, weight, bias=None, **kw):
        return kernel(_f(x), _f(weight), None if bias is None else _f(bias), **kw)
    return run


_NP: dict[str, Callable[..., Any]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum, "floor_div": np.floor_divide, "mod": np.mod,
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal, "logical_and": np.logical_and,
    "logical_or": np.logical_or, "logical_xor": np.logical_xor,
}
_UNARY: dict[str, Callable[..., Any]] = {
    "relu": lambda x: np.maximum(x, 0), "relu6": lambda x: np.clip(x, 0, 6), "sigmoid": _sigmoid,
    "tanh": np.tanh, "exp": np.exp, "exp2": np.exp2, "sqrt": np.sqrt, "abs": np.abs, "floor": np.floor,
    "ceil": np.ceil, "sign": np.sign, "sin": np.sin, "cos": np.cos, "square": np.square,
    "erf": lambda x: _erf(x), "silu": lambda x: x * _sigmoid(x), "logical_not": np.logical_not,
    "softplus": lambda x: np.logaddexp(0, x), "softsign": lambda x: x / (1 + np.abs(x)),
}
KERNELS: dict[str, Callable[..., Any]] = {
    **{k: _binary(fn) for k, fn in _NP.items()},
    **{k: _unary(fn) for k, fn in _UNARY.items()},
    "log": lambda x, epsilon=1e-45: np.log(_f(x) + epsilon),
    "rsqrt": lambda x, epsilon=1e-12: 1 / np.sqrt(_f(x) + epsilon),
    "inverse": lambda x, epsilon=1e-4: 1 / (_f(x) + epsilon),
    "gelu": _gelu, "softmax": _softmax, "layer_norm": _layer_norm, "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    "sigmoid_hard": lambda x, alpha=0.2, beta=0.5: np.clip(alpha * _f(x) + beta, 0, 1),
    "leaky_relu": lambda x, alpha=0.01: np.where(_f(x) >= 0, _f(x), alpha * _f(x)),
    "elu": lambda x, alpha=1.0: np.where(_f(x) > 0, _f(x), alpha * (np.exp(_f(x)) - 1)),
    "clip": lambda x, alpha, beta: np.clip(_f(x), alpha, beta),
    "linear_activation": lambda x, alpha, beta=0.0: alpha * _f(x) + beta,
    "scaled_tanh": lambda x, alpha=1.0, beta=1.0: alpha * np.tanh(beta * _f(x)),
    "thresholded_relu": lambda x, alpha=1.0: np.where(_f(x) > alpha, _f(x), 0),
    "prelu": lambda x, alpha: np.where(_f(x) >= 0, _f(x), _f(x) * _channel(alpha, np.ndim(x))),
    "linear": lambda x, weight, bias=None: _f(x) @ _f(weight).T + (0 if bias is None else _f(bias)),
    "matmul": _matmul,
    "conv": _with_bias(K.conv), "conv_transpose": _with_bias(K.conv_transpose),
    "max_pool": lambda x, **kw: K.pool("max_pool", _f(x), **kw),
    "avg_pool": lambda x, **kw: K.pool("avg_pool", _f(x), **kw),
    "l2_pool": lambda x, **kw: K.pool("l2_pool", _f(x), **kw),
    "resize_bilinear": lambda x, **kw: K.resize_bilinear(_f(x), **kw),
    "upsample_bilinear": lambda x, **kw: K.upsample_bilinear(_f(x), **kw),
    "upsample_nearest_neighbor": lambda x, **kw: K.upsample_nearest_neighbor(np.asarray(x), **kw),
    "pad": lambda x, **kw: K.pad(np.asarray(x), **kw),
    "reduce_mean": _reduce(np.mean), "reduce_sum": _reduce(np.sum), "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min), "reduce_prod": _reduce(np.prod),
    "reduce_sum_square": _reduce(lambda x, **kw: np.sum(x * x, **kw)),
    "reduce_l2_norm": _reduce(lambda x, **kw: np.sqrt(np.sum(x * x, **kw))),
    "reduce_l1_norm": _reduce(lambda x, **kw: np.sum(np.abs(x), **kw)),
    "reduce_argmax": lambda x, axis=-1, keep_dims=False, output_dtype="int32": np.argmax(
        _f(x), axis=int(axis), keepdims=bool(keep_dims)),
    "reduce_argmin": lambda x, axis=-1, keep_dims=False, output_dtype="int32": np.argmin(
        _f(x), axis=int(axis), keepdims=bool(keep_dims)),
    "reshape": lambda x, shape: np.reshape(x, [int(s) for s in shape]),
    "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "concat": _concat, "pixel_shuffle": _pixel_shuffle,
    "split": _split, "slice_by_index": _slice,
    "slice_by_size": lambda x, begin, size: np.asarray(x)[tuple(
        slice(int(b), None if int(s) == -1 else int(b) + int(s)) for b, s in zip(begin, size, strict=True))],
    "squeeze": lambda x, axes=None: np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes)),
    "expand_dims": lambda x, axes: np.expand_dims(x, tuple(int(a) for a in axes)),
    "tile": lambda x, reps: np.tile(x, [int(r) for r in reps]),
    "gather": lambda x, indices, axis=0, batch_dims=0, validate_indices=False: np.take(x, indices, axis=int(axis)),
    "gather_along_axis": lambda x, indices, axis=0, validate_indices=False: np.take_along_axis(x, indices, int(axis)),
    "select": lambda cond, a, b: np.where(cond, _f(a), _f(b)),
    "cast": lambda x, dtype: np.asarray(x).astype(types.nptype_from_builtin(types.string_to_builtin(dtype))),
    "identity": lambda x: x, "fill": lambda shape, value=0.0: np.full([int(s) for s in shape], value),
    "shape": lambda x: np.array(np.shape(x), np.int32),
    "stack": lambda values, axis: np.stack(values, axis=int(axis)),
    "range_1d": lambda start, end, step: np.arange(start, end, step),
    "quantize": _quantize, "dequantize": _dequantize,
    "constexpr_affine_dequantize": lambda quantized_data, zero_point, scale, axis: _dequantize(
        quantized_data, scale, zero_point, None if np.ndim(scale) == 0 else axis),
    "constexpr_blockwise_shift_scale": _blockwise,
    "constexpr_cast": lambda source_val, output_dtype: np.asarray(source_val),
}


def _resolve(v: Any, env: dict[str, np.ndarray]) -> Any:
    if isinstance(v, (list, tuple)):
        return [_resolve(u, env) for u in v]
    if isinstance(v, Var):
        return v.val if v.val is not None else env[v.name]
    return v


def evaluate(program: Program, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the ``main`` function on feeds keyed by Core ML input name; outputs by Core ML name."""
    func = program.functions["main"]
    env: dict[str, np.ndarray] = {}
    for name, var in func.inputs.items():
        env[var.name] = np.asarray(feeds[name]).astype(types.nptype_from_builtin(var.dtype))
    # fp16 overflow to inf (and inf - inf) is part of what is being emulated: no warnings.
    with np.errstate(all="ignore"):
        for op in func.operations:
            if op.op_type != "const":
                _run_op(op, env)
    return {v.name: env[v.name] for v in func.outputs}


def _run_op(op: Any, env: dict[str, np.ndarray]) -> None:
    kernel = KERNELS.get(op.op_type)
    if kernel is None:
        raise VerificationError(f"the read-back evaluator has no reference for MIL op "
                                f"{op.op_type} ({op.name})")
    args = {k: _resolve(v, env) for k, v in op.inputs.items()}
    try:
        results = kernel(**args)
    except Exception as e:  # numpy raises many types; say which op failed
        raise VerificationError(f"read-back evaluation of MIL op {op.op_type} ({op.name}) "
                                f"failed: {e}") from e
    if not isinstance(results, (list, tuple)):
        results = [results]
    for var, value in zip(op.outputs, results, strict=True):
        env[var.name] = np.asarray(value).astype(types.nptype_from_builtin(var.dtype))
