"""ONNX operators as torch functions, for the float ops of a graph that QAT trains.

Each builder reads a node's attributes (and its constant inputs, such as a Reshape's shape)
once, and returns a function from the node's runtime inputs to its outputs. Only the ops that
convolutional and MLP classifiers need are covered; anything else is reported by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

#: Inputs are tensors, or None for an absent optional input.
OpFn = Callable[[Sequence[Any]], list[torch.Tensor]]
Builder = Callable[[ir.Node, list[np.ndarray | None]], OpFn]


def _ints(node: ir.Node, name: str, default: Sequence[int] | None = None) -> list[int] | None:
    attr = node.attributes.get(name)
    return list(attr.as_ints()) if attr is not None else (list(default) if default is not None else None)


def _onnx_pads_to_torch(pads: Sequence[int]) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] -> torch F.pad order (last axis first, begin then end)."""
    nd = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[nd + i]]
    return out


def _spatial_pads(node: ir.Node, nd: int) -> list[int]:
    auto = node.attributes.get_string("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"auto_pad={auto}")
    return _ints(node, "pads") or [0] * (2 * nd)


def _conv(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    strides, dilations = _ints(node, "strides"), _ints(node, "dilations")
    group = node.attributes.get_int("group", 1)
    convs = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

    def run(ins: Sequence[Any]) -> list[torch.Tensor]:
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        nd = w.dim() - 2
        pads = _spatial_pads(node, nd)
        padding: list[int] | int = pads[:nd]
        if pads[:nd] != pads[nd:]:
            x, padding = F.pad(x, _onnx_pads_to_torch(pads)), 0
        return [convs[nd](x, w, b, strides or 1, padding, dilations or 1, group)]
    return run


def _gemm(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    a = node.attributes
    alpha, beta = a.get_float("alpha", 1.0), a.get_float("beta", 1.0)
    ta, tb = a.get_int("transA", 0), a.get_int("transB", 0)

    def run(ins: Sequence[Any]) -> list[torch.Tensor]:
        x = ins[0].t() if ta else ins[0]
        w = ins[1].t() if tb else ins[1]
        y = x @ w if alpha == 1.0 else alpha * (x @ w)
        if len(ins) > 2 and ins[2] is not None:
            y = y + (ins[2] if beta == 1.0 else beta * ins[2])
        return [y]
    return run


def _pool(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    kernel = _ints(node, "kernel_shape") or []
    nd = len(kernel)
    strides = _ints(node, "strides") or [1] * nd
    pads = _spatial_pads(node, nd)
    ceil = bool(node.attributes.get_int("ceil_mode", 0))
    if node.op_type == "MaxPool":
        dil = _ints(node, "dilations") or [1] * nd
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]

        def run_max(ins: Sequence[Any]) -> list[torch.Tensor]:
            x = F.pad(ins[0], _onnx_pads_to_torch(pads), value=-math.inf) if any(pads) else ins[0]
            return [pool(x, kernel, strides, 0, dil, ceil_mode=ceil)]
        return run_max
    include = bool(node.attributes.get_int("count_include_pad", 0))
    if pads[:nd] != pads[nd:] or any(p > k // 2 for p, k in zip(pads, kernel * 2, strict=True)):
        raise NotImplementedError("asymmetric or oversized AveragePool padding")
    avg = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    return lambda ins: [avg(ins[0], kernel, strides, pads[:nd], ceil, include)]


def _reshape(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    if consts[1] is None:
        raise NotImplementedError("Reshape with a computed shape")
    shape = [int(s) for s in consts[1]]
    allowzero = node.attributes.get_int("allowzero", 0)

    def run(ins: Sequence[Any]) -> list[torch.Tensor]:
        x = ins[0]
        target = [x.shape[i] if s == 0 and not allowzero else s for i, s in enumerate(shape)]
        return [x.reshape(target)]
    return run


def _flatten(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    axis = node.attributes.get_int("axis", 1)

    def run(ins: Sequence[Any]) -> list[torch.Tensor]:
        x = ins[0]
        k = axis % x.dim() if axis < 0 else axis
        return [x.reshape(int(np.prod(x.shape[:k])), -1)]
    return run


def _axes(node: ir.Node, consts: list[np.ndarray | None]) -> list[int] | None:
    if len(consts) > 1 and consts[1] is not None:
        return [int(a) for a in consts[1]]
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        raise NotImplementedError("computed axes")
    return _ints(node, "axes")


def _squeeze(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    axes = _axes(node, consts)
    if axes is None:
        return lambda ins: [ins[0].squeeze()]
    return lambda ins: [ins[0].squeeze(tuple(axes))]


def _unsqueeze(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    axes = _axes(node, consts) or []

    def run(ins: Sequence[Any]) -> list[torch.Tensor]:
        x = ins[0]
        rank = x.dim() + len(axes)
        for a in sorted(a % rank for a in axes):
            x = x.unsqueeze(a)
        return [x]
    return run


def _clip(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    lo = float(consts[1]) if len(consts) > 1 and consts[1] is not None else None
    hi = float(consts[2]) if len(consts) > 2 and consts[2] is not None else None
    if any(v is not None and c is None for v, c in zip(node.inputs[1:], consts[1:], strict=True)):
        raise NotImplementedError("Clip with computed bounds")
    return lambda ins: [ins[0].clamp(min=lo, max=hi)]


def _pad(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    mode = node.attributes.get_string("mode", "constant")
    if consts[1] is None or (len(consts) > 3 and node.inputs[3] is not None):
        raise NotImplementedError("Pad with computed pads or an axes input")
    pads = _onnx_pads_to_torch([int(p) for p in consts[1]])
    value = float(consts[2]) if len(consts) > 2 and consts[2] is not None else 0.0
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[mode]

    def run(ins: Sequence[Any]) -> list[torch.Tensor]:
        x = ins[0]
        p = pads[: 2 * (x.dim() - 2)] if torch_mode != "constant" else pads  # batch/channel pads are 0
        return [F.pad(x, p, mode=torch_mode, value=value if torch_mode == "constant" else None)]
    return run


def _batchnorm(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    if any(c is None for c in consts[1:5]):
        raise NotImplementedError("BatchNormalization with computed statistics")
    gamma, beta, mean, var = (torch.from_numpy(np.asarray(c, np.float32)) for c in consts[1:5])
    eps = node.attributes.get_float("epsilon", 1e-5)
    mult = gamma / torch.sqrt(var + eps)
    offset = beta - mean * mult

    def run(ins: Sequence[Any]) -> list[torch.Tensor]:
        shape = [1, -1] + [1] * (ins[0].dim() - 2)
        return [ins[0] * mult.to(ins[0].device).reshape(shape) + offset.to(ins[0].device).reshape(shape)]
    return run


def _reduce_mean(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    axes = _axes(node, consts)
    keep = bool(node.attributes.get_int("keepdims", 1))
    return lambda ins: [ins[0].mean(dim=tuple(axes) if axes else None, keepdim=keep)]


def _simple(fn: Callable[..., torch.Tensor]) -> Builder:
    return lambda node, consts: (lambda ins: [fn(*ins)])


def _unary(make: Callable[[ir.Node], Callable[[torch.Tensor], torch.Tensor]]) -> Builder:
    """A builder for a one-input op whose function depends on the node's attributes."""
    def builder(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
        f = make(node)
        return lambda ins: [f(ins[0])]
    return builder


def _leaky_relu(node: ir.Node) -> Callable[[torch.Tensor], torch.Tensor]:
    alpha = node.attributes.get_float("alpha", 0.01)
    return lambda x: F.leaky_relu(x, alpha)


def _hard_sigmoid(node: ir.Node) -> Callable[[torch.Tensor], torch.Tensor]:
    alpha, beta = node.attributes.get_float("alpha", 0.2), node.attributes.get_float("beta", 0.5)
    return lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)


def _softmax(node: ir.Node) -> Callable[[torch.Tensor], torch.Tensor]:
    axis = node.attributes.get_int("axis", -1)
    return lambda x: torch.softmax(x, axis)


def _transpose(node: ir.Node) -> Callable[[torch.Tensor], torch.Tensor]:
    perm = _ints(node, "perm")
    return lambda x: x.permute(perm or list(range(x.dim()))[::-1])


def _concat(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    axis = node.attributes.get_int("axis", 0)
    return lambda ins: [torch.cat(list(ins), axis)]


def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def _spatial_max(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


BUILDERS: dict[str, Builder] = {
    "Conv": _conv, "Gemm": _gemm, "MaxPool": _pool, "AveragePool": _pool,
    "MatMul": _simple(torch.matmul), "Add": _simple(torch.add), "Sub": _simple(torch.sub),
    "Mul": _simple(torch.mul), "Div": _simple(torch.div),
    "Relu": _simple(F.relu), "Sigmoid": _simple(torch.sigmoid), "Tanh": _simple(torch.tanh),
    "Erf": _simple(torch.erf), "Sqrt": _simple(torch.sqrt), "Identity": _simple(lambda x: x),
    "HardSwish": _simple(F.hardswish), "Clip": _clip, "Pad": _pad, "BatchNormalization": _batchnorm,
    "Reshape": _reshape, "Flatten": _flatten, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "ReduceMean": _reduce_mean, "Concat": _concat,
    "GlobalAveragePool": _simple(_spatial_mean), "GlobalMaxPool": _simple(_spatial_max),
    "LeakyRelu": _unary(_leaky_relu), "HardSigmoid": _unary(_hard_sigmoid), "Softmax": _unary(_softmax),
    "Transpose": _unary(_transpose),
    "Dropout": _simple(lambda x, *rest: x),  # exported graphs are in inference mode
}



def build(node: ir.Node, consts: list[np.ndarray | None]) -> OpFn:
    """The torch function of ``node``; NotImplementedError says what is not covered."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in BUILDERS:
        raise NotImplementedError(f"op {node.domain + '::' if node.domain else ''}{node.op_type}")
    return BUILDERS[node.op_type](node, consts)
