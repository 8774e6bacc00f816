"""Recurrent layers (LSTM/GRU/RNN) with int8 weights and float math.

No runtime irq targets has a static int8 recurrent kernel, so both the dynamic and the static
ONNX targets store W and R as int8 per gate row and read them through DequantizeLinear: the
weights, most of a recurrent model's size, shrink 4x and the math stays float.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from irq.ir.edit import Namer, add_initializer, new_node
from irq.ir.model import constant_array, node_label
from irq.quant.arith import quantize_weight

RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})


def _dequantized_rows(graph: ir.Graph, namer: Namer, w: np.ndarray, base: str) -> ir.Value:
    """``w`` ([dirs, gates*H, K]) as int8 rows with one scale each, dequantized back to its shape."""
    rows = w.reshape(-1, w.shape[-1])
    w_q, scales = quantize_weight(rows, 0)
    q_v = add_initializer(graph, namer, w_q, f"{base}_int8")
    s_v = add_initializer(graph, namer, scales, f"{base}_scale")
    z_v = add_initializer(graph, namer, np.zeros(scales.shape, np.int8), f"{base}_zero_point")
    dq = new_node(namer, "DequantizeLinear", [q_v, s_v, z_v], f"{base}_dequantized", attributes={"axis": 0})
    dq.outputs[0].dtype, dq.outputs[0].shape = ir.DataType.FLOAT, ir.Shape(rows.shape)
    shape = add_initializer(graph, namer, np.array(w.shape, np.int64), f"{base}_shape")
    full = new_node(namer, "Reshape", [dq.outputs[0], shape], f"{base}_3d")
    full.outputs[0].dtype, full.outputs[0].shape = ir.DataType.FLOAT, ir.Shape(w.shape)
    graph.insert_before(next(iter(graph)), [dq, full])
    return full.outputs[0]


def int8_recurrent_weights(graph: ir.Graph, namer: Namer, node: ir.Node) -> bool:
    """Store the node's W and R (inputs 1 and 2) as int8 rows; False when neither is a float constant."""
    changed = False
    for idx in (1, 2):
        w = constant_array(node.inputs[idx]) if len(node.inputs) > idx else None
        if w is not None and w.dtype == np.float32 and w.ndim == 3:
            node.replace_input_with(idx, _dequantized_rows(graph, namer, w, f"{node_label(node)}_w{idx}"))
            changed = True
    return changed
