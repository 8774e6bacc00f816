"""Ops spelled out for TFLite's 16x8 scheme, whose quantizer has no int16 kernel for them.

- ``PRelu(x, a) = Relu(x) + a * Min(x, 0)``
- ``HardSwish(x) = x * Min(Max(x / 6 + 1/2, 0), 1)`` (with Clip or Relu6 the TFLite converter
  fuses it back into HARD_SWISH)

RELU, MINIMUM, MAXIMUM, ADD and MUL all have 16x8 kernels. MediaPipe's detectors are full of
PReLU and its segmenters of hard-swish; without this they cannot be lowered in 16x8 at all
("Quantization to 16x8-bit not yet supported for op: 'PRELU'"). int8 keeps TFLite's own ops.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from irq.ir.edit import Namer, add_initializer, new_node, replace_value
from irq.ir.model import node_label


def _prelu(node: ir.Node, graph: ir.Graph, namer: Namer, base: str) -> list[ir.Node] | None:
    x, slope = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
    if x is None or slope is None:
        return None
    zero = add_initializer(graph, namer, np.array(0.0, np.float32), f"{base}_zero")
    positive = new_node(namer, "Relu", [x], f"{base}_positive")
    negative = new_node(namer, "Min", [x, zero], f"{base}_negative")
    scaled = new_node(namer, "Mul", [negative.outputs[0], slope], f"{base}_scaled")
    return [positive, negative, scaled, new_node(namer, "Add", [positive.outputs[0], scaled.outputs[0]], f"{base}_sum")]


def _hard_swish(node: ir.Node, graph: ir.Graph, namer: Namer, base: str) -> list[ir.Node] | None:
    x = node.inputs[0]
    if x is None:
        return None
    const = {k: add_initializer(graph, namer, np.array(v, np.float32), f"{base}_{k}")
             for k, v in (("sixth", 1.0 / 6.0), ("half", 0.5), ("zero", 0.0), ("one", 1.0))}
    scaled = new_node(namer, "Mul", [x, const["sixth"]], f"{base}_scaled")
    shifted = new_node(namer, "Add", [scaled.outputs[0], const["half"]], f"{base}_shifted")
    low = new_node(namer, "Max", [shifted.outputs[0], const["zero"]], f"{base}_low")
    gate = new_node(namer, "Min", [low.outputs[0], const["one"]], f"{base}_gate")
    return [scaled, shifted, low, gate, new_node(namer, "Mul", [x, gate.outputs[0]], f"{base}_gated")]


_REWRITES: dict[str, Callable[[ir.Node, ir.Graph, Namer, str], list[ir.Node] | None]] = {
    "PRelu": _prelu, "HardSwish": _hard_swish}


def decompose_for_16x8(graph: ir.Graph) -> list[str]:
    """Rewrite every PRelu and HardSwish of the main graph in place; return their labels."""
    namer, done = Namer(graph), []
    for node in [n for n in graph if n.op_type in _REWRITES and n.domain in ("", "ai.onnx")]:
        base = (node.name or node.outputs[0].name or node.op_type).replace(":", "_")
        nodes = _REWRITES[node.op_type](node, graph, namer, base)
        if nodes is None:
            continue
        out = nodes[-1].outputs[0]
        out.type, out.shape = node.outputs[0].type, node.outputs[0].shape
        graph.insert_before(node, nodes)
        replace_value(node.outputs[0], out)
        graph.remove(node, safe=True)
        done.append(node_label(node))
    return done
