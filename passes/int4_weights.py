"""INT4 weight-only quantization: MatMul weights as block-wise int4 in onnxruntime's MatMulNBits.

Each block of ``block-size`` consecutive weights along K (the reduction axis) of one output
column gets its own scale; values are symmetric int4 in [-8, 7], stored offset by 8 as two
nibbles per byte (low nibble first), the layout MatMulNBits reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from irq.graph_edit import Namer, add_initializer, ensure_opset, new_node, replace_value
from irq.ir import QModel, constant_array, node_label
from irq.pass_infra import Pass, PassResult
from irq.qspec import Precision


def quantize_int4_blocks(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(q, scales) for W[K, N]: q is int8 in [-8, 7] shaped [N, blocks, block], scales [N, blocks]."""
    k, n = w.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), dtype=np.float32)
    padded[:k] = w
    cols = padded.T.reshape(n, blocks, block)
    amax = np.abs(cols).max(axis=2)
    scales = np.where(amax > 0, amax / 7.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(cols / scales[..., None]), -8, 7).astype(np.int8)
    return q, scales


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """int4 values [-8, 7] in [..., even] -> uint8 [..., half] (offset 8, low nibble first)."""
    u = (q.astype(np.int16) + 8).astype(np.uint8)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


def dequantize_int4_blocks(q: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """The float W[K, N] that the int4 blocks represent (for tests and QAT)."""
    n = q.shape[0]
    return (q.astype(np.float32) * scales[..., None]).reshape(n, -1)[:, :k].T


@dataclass(frozen=True)
class Int4Weights(Pass):
    """Replace planned MatMuls whose weight is a 2-D constant by MatMulNBits (4 bits)."""

    name = "int4-weights"
    requires = ("plan-precision",)
    block_size: int = 0  # 0: the scheme's block size

    def run(self, qmodel: QModel) -> PassResult:
        """Rewrite in place."""
        block = self.block_size or qmodel.scheme.int4_block_size
        graph, namer = qmodel.graph, Namer(qmodel.graph)
        count = 0
        for node in list(graph):
            d = qmodel.plan.get(node_label(node))
            w = constant_array(node.inputs[1]) if node.op_type == "MatMul" else None
            if d is None or d.precision != Precision.INT4_WEIGHT or w is None or w.ndim != 2:
                continue
            k, n = w.shape
            q, scales = quantize_int4_blocks(w.astype(np.float32), block)
            base = node.inputs[1].name or node_label(node)
            b = add_initializer(graph, namer, pack_nibbles(q), f"{base}_int4")
            s = add_initializer(graph, namer, scales.reshape(-1), f"{base}_int4_scale")
            mm = new_node(namer, "MatMulNBits", [node.inputs[0], b, s], node_label(node), domain="com.microsoft",
                          attributes={"K": k, "N": n, "bits": 4, "block_size": block})
            mm.outputs[0].dtype, mm.outputs[0].shape = ir.DataType.FLOAT, node.outputs[0].shape
            graph.insert_before(node, mm)
            replace_value(node.outputs[0], mm.outputs[0])
            graph.remove(node, safe=True)
            count += 1
        if count:
            ensure_opset(qmodel.model, "com.microsoft", 1)
            RemoveUnusedNodesPass()(qmodel.model)
        qmodel.analysis["int4"] = {"matmuls": count, "block_size": block}
        return PassResult(qmodel, count > 0)
