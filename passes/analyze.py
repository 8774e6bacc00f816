"""Graph analysis: op census, sizes, quantizable layers, first/last layers and hazards.

Annotates only: the results land in ``qmodel.analysis.audit`` for the report, the CLI's
``irq audit`` and the passes that decide precision.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from irq.ir.analysis import COMPUTE_OPS, first_and_last_layers, has_constant_weight, residual_joins
from irq.ir.model import QModel, constant_array, node_label
from irq.pipeline.infra import Pass, PassResult
from irq.quant.hazards import static_suspects

_NON_NEGATIVE_PRODUCERS = frozenset({"Relu", "Sigmoid", "Softmax", "Abs", "Exp"})


def _producer_is_non_negative(value: ir.Value | None) -> bool:
    p = value.producer() if value is not None else None
    if p is None:
        return False
    if p.op_type in _NON_NEGATIVE_PRODUCERS:
        return True
    if p.op_type == "Clip" and len(p.inputs) > 1:
        lo = constant_array(p.inputs[1])
        return lo is not None and float(lo) >= 0
    return p.op_type in ("MaxPool", "Reshape", "Flatten") and _producer_is_non_negative(p.inputs[0])


def _is_silu_mul(node: ir.Node) -> bool:
    if node.op_type != "Mul" or len(node.inputs) != 2:
        return False
    a, b = node.inputs
    for x, s in ((a, b), (b, a)):
        p = s.producer() if s is not None else None
        if p is not None and p.op_type == "Sigmoid" and p.inputs[0] is x:
            return True
    return False


def _hazards(graph: ir.Graph) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def add(kind: str, node: ir.Node, detail: str) -> None:
        found.append({"kind": kind, "node": node_label(node), "op_type": node.op_type, "detail": detail})

    for node in graph:
        op = node.op_type
        if op == "MaxPool":
            pads = node.attributes.get_ints("pads", [])
            auto = node.attributes.get_string("auto_pad", "NOTSET")
            if (any(pads) or auto.startswith("SAME")) and not _producer_is_non_negative(node.inputs[0]):
                add("maxpool-padding", node, "padded MaxPool on a possibly negative input: converters "
                    "that pad with -inf/dtype-min blow up int8 scales")
        elif op == "HardSwish" or _is_silu_mul(node):
            add("asymmetric-activation", node, "SiLU/HardSwish output range is about [-0.28, max]: "
                "symmetric int8 wastes half the codes; prefer asymmetric activations")
        elif op in ("Softmax", "LayerNormalization", "Gelu", "Erf"):
            add("sensitive-op", node, f"{op} is usually sensitive to 8-bit activations")
        elif op in COMPUTE_OPS and op not in ("LSTM", "GRU", "RNN") and not has_constant_weight(node):
            add("activation-matmul", node, "both operands are activations (e.g. attention): "
                "quantized at run time with per-tensor scales")
        if op in ("Conv", "Gemm", "MatMul", "ConvTranspose") and has_constant_weight(node):
            w = np.abs(constant_array(node.inputs[1]).astype(np.float32))  # type: ignore[union-attr]
            p9999 = float(np.percentile(w, 99.99)) if w.size > 100 else float(w.max())
            if p9999 > 0 and float(w.max()) / p9999 > 8:
                add("weight-outlier", node, f"max |w| is {float(w.max()) / p9999:.1f}x the 99.99th "
                    "percentile: per-channel scales or higher precision needed")
    for v in graph.inputs:
        dims = list(v.shape) if v.shape is not None else []
        symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
        if [i for i in symbolic if i != 0]:
            found.append({"kind": "dynamic-shape", "node": v.name, "op_type": "<input>",
                          "detail": f"symbolic dims at axes {symbolic}: backends fix them at lowering"})
    return found


def audit(graph: ir.Graph, model: ir.Model) -> dict[str, Any]:
    """The audit report of a graph: what it contains, how big it is and what may go wrong."""
    census = Counter(n.op_type if not n.domain else f"{n.domain}::{n.op_type}" for n in graph)
    param_bytes = sum(int(v.const_value.nbytes) for v in graph.initializers.values()
                      if v.const_value is not None)
    # count the tensors themselves: shape inference may have merged a symbolic dim into a value's shape
    param_count = sum(int(v.const_value.size) for v in graph.initializers.values() if v.const_value is not None)
    layers = []
    for node in graph:
        if node.op_type in COMPUTE_OPS and has_constant_weight(node):
            w = node.inputs[1]
            layers.append({"name": node_label(node), "op_type": node.op_type,
                           "weight": w.name, "params": int(w.const_value.size),  # type: ignore[union-attr]
                           "bytes": int(w.const_value.nbytes)})  # type: ignore[union-attr]
    first, last = first_and_last_layers(graph)
    return {
        "nodes": sum(census.values()),
        "op_census": dict(sorted(census.items(), key=lambda kv: -kv[1])),
        "parameters": param_count,
        "parameter_bytes": param_bytes,
        "opsets": dict(model.opset_imports),
        "inputs": [{"name": v.name, "dtype": str(v.dtype), "shape": [str(d) for d in (v.shape or [])]}
                   for v in graph.inputs],
        "outputs": [{"name": v.name, "dtype": str(v.dtype), "shape": [str(d) for d in (v.shape or [])]}
                    for v in graph.outputs],
        "quantizable_layers": layers,
        "first_layers": first,
        "last_layers": last,
        "residual_joins": len(residual_joins(graph)),
        "hazards": _hazards(graph) + static_suspects(graph),
    }


@dataclass(frozen=True)
class Analyze(Pass):
    """Record the audit of the current graph in ``qmodel.analysis.audit``."""

    name = "analyze"
    rewrites_graph = False

    def run(self, qmodel: QModel) -> PassResult:
        """Analyze without changing the graph."""
        qmodel.analysis.audit = audit(qmodel.graph, qmodel.model)
        return PassResult(qmodel, False)
