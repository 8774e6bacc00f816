"""BatchNorm folding: Conv/ConvTranspose/Gemm followed by BatchNormalization becomes one layer.

Folding before calibration matters: the int8 weight scales must be chosen for the weights
that will actually run, and a separate BN would need its own quantized activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.ir.edit import Namer, add_initializer, replace_value
from irq.ir.model import QModel, constant_array
from irq.pipeline.infra import Pass, PassResult

_FOLDABLE = ("Conv", "ConvTranspose", "Gemm")


def _bn_params(bn: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (multiplier, offset) of an inference-mode BatchNormalization, or None."""
    arrays = [constant_array(v) for v in bn.inputs[1:5]]
    if any(a is None for a in arrays) or len(bn.outputs) != 1:
        return None
    gamma, beta, mean, var = (np.asarray(a, dtype=np.float64) for a in arrays)  # type: ignore[arg-type]
    eps = bn.attributes.get_float("epsilon", 1e-5)
    mult = gamma / np.sqrt(var + eps)
    return mult, beta - mean * mult


def _out_channel_axis(node: ir.Node) -> int | None:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if node.attributes.get_int("group", 1) == 1 else None
    # Gemm: Y = A @ op(B); the output channel is B's axis 0 when transB, else axis 1.
    if node.attributes.get_float("alpha", 1.0) != 1.0:
        return None
    return 0 if node.attributes.get_int("transB", 0) else 1


@dataclass(frozen=True)
class FoldBatchNorm(Pass):
    """Fold each BatchNormalization into the Conv/ConvTranspose/Gemm that alone feeds it."""

    name = "fold-bn"

    def run(self, qmodel: QModel) -> PassResult:
        """Fold every eligible pair; leave the rest untouched."""
        graph = qmodel.graph
        namer = Namer(graph)
        folded = 0
        for bn in [n for n in graph if n.op_type == "BatchNormalization" and n.domain == ""]:
            if self._fold(graph, namer, bn):
                folded += 1
        qmodel.analysis.record(self.name, folded=folded)
        return PassResult(qmodel, folded > 0)

    @staticmethod
    def _fold(graph: ir.Graph, namer: Namer, bn: ir.Node) -> bool:
        x = bn.inputs[0]
        layer = x.producer() if x is not None else None
        if layer is None or layer.op_type not in _FOLDABLE or len(x.uses()) != 1 or x.is_graph_output():
            return False
        params = _bn_params(bn)
        weight = constant_array(layer.inputs[1])
        axis = _out_channel_axis(layer)
        if params is None or weight is None or axis is None:
            return False
        mult, offset = params
        if weight.shape[axis] != mult.shape[0]:
            return False
        shape = [1] * weight.ndim
        shape[axis] = -1
        new_w = (weight.astype(np.float64) * mult.reshape(shape)).astype(weight.dtype)
        bias_value = layer.inputs[2] if len(layer.inputs) > 2 else None
        bias = constant_array(bias_value)
        if bias_value is not None and bias is None:
            return False
        if layer.op_type == "Gemm" and layer.attributes.get_float("beta", 1.0) != 1.0 and bias is not None:
            bias = bias * layer.attributes.get_float("beta", 1.0)
            layer.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        bias = np.zeros(mult.shape[0]) if bias is None else bias.astype(np.float64)
        if bias.shape != mult.shape:
            return False
        new_b = (bias * mult + offset).astype(weight.dtype)
        base = layer.name or "folded"
        layer.replace_input_with(1, add_initializer(graph, namer, new_w, f"{base}.weight_bnfolded"))
        b_value = add_initializer(graph, namer, new_b, f"{base}.bias_bnfolded")
        if len(layer.inputs) > 2:
            layer.replace_input_with(2, b_value)
        else:
            layer.resize_inputs(3)
            layer.replace_input_with(2, b_value)
        replace_value(bn.outputs[0], x)  # type: ignore[arg-type]
        graph.remove(bn, safe=True)
        return True
