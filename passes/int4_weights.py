"""INT4 weight-only quantization: MatMul/Gemm weights as block-wise int4 in onnxruntime's MatMulNBits.

Each block of ``block-size`` consecutive weights along K (the reduction axis) of one output
column gets its own scale; values are symmetric int4 in [-8, 7], stored offset by 8 as two
nibbles per byte (low nibble first), the layout MatMulNBits reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from irq.ir.edit import Namer, add_initializer, ensure_opset, new_node, replace_value
from irq.ir.model import QModel, constant_array, node_label
from irq.pipeline.infra import Pass, PassResult
from irq.quant.spec import Precision


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


def _weight_kn(node: ir.Node) -> np.ndarray | None:
    """W[K, N] of a MatMul, or of a Gemm computing x @ W (+ bias); None for anything else."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.inputs) < 2:
        return None
    w = constant_array(node.inputs[1])
    if w is None or w.ndim != 2 or w.dtype != np.float32:
        return None
    if node.op_type == "Gemm":
        a = node.attributes
        if a.get_int("transA", 0) or a.get_float("alpha", 1.0) != 1.0:
            return None
        if len(node.inputs) > 2 and node.inputs[2] is not None and constant_array(node.inputs[2]) is None:
            return None
        w = w.T if a.get_int("transB", 0) else w
    return np.ascontiguousarray(w)


@dataclass(frozen=True)
class Int4Weights(Pass):
    """Replace planned MatMul/Gemm with a 2-D constant weight by MatMulNBits (4 bits) (+ bias Add)."""

    name = "int4-weights"
    keeps_plan = True
    block_size: int = 0  # 0: the scheme's block size

    def requires(self, qmodel: QModel) -> list[str]:
        """A current precision plan."""
        return qmodel.plan_problems()

    def run(self, qmodel: QModel) -> PassResult:
        """Rewrite in place."""
        block = self.block_size or qmodel.scheme.int4_block_size
        graph, namer = qmodel.graph, Namer(qmodel.graph)
        count = 0
        for node in list(graph):
            d = qmodel.plan.get(node_label(node))
            w = _weight_kn(node)
            if d is None or d.precision != Precision.INT4_WEIGHT or w is None:
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
            result = mm.outputs[0]
            bias = constant_array(node.inputs[2]) if node.op_type == "Gemm" and len(node.inputs) > 2 else None
            if bias is not None:
                beta = node.attributes.get_float("beta", 1.0)
                b = add_initializer(graph, namer, (bias * beta).astype(np.float32), f"{base}_bias")
                add = new_node(namer, "Add", [result, b], f"{node_label(node)}_biased")
                add.outputs[0].dtype, add.outputs[0].shape = ir.DataType.FLOAT, node.outputs[0].shape
                graph.insert_before(node, add)
                result = add.outputs[0]
            replace_value(node.outputs[0], result)
            graph.remove(node, safe=True)
            count += 1
        if count:
            ensure_opset(qmodel.model, "com.microsoft", 1)
            RemoveUnusedNodesPass()(qmodel.model)
        qmodel.analysis.record(self.name, matmuls=count, block_size=block)
        return PassResult(qmodel, count > 0)
