"""Where float layers meet int8 ones: plan fixes that make "keep this layer float" mean what it says.

The Q/DQ convention quantizes a node's inputs, and a ReLU/Clip after a quantized layer is
folded into the output quantizer only when every consumer is quantized. Around a float layer
two things go wrong without these fixes:

- a quantized ReLU/Clip that feeds only float layers is no longer folded: its *input* is
  quantized over the pre-activation range (often hundreds wide after BN folding), which can
  cost more than quantizing everything. Such an activation is kept float: the int8 layer
  before it then hands its output on unrounded.
- onnxruntime moves a DequantizeLinear forward through MaxPool/Reshape/Transpose/Squeeze/
  Unsqueeze/Slice (``qdq_propagation.cc``), folds a Pad into the Conv after it
  (``pad_fusion.cc``) and drops Identity; a float Conv/Gemm that then reads a
  DequantizeLinear and feeds a QuantizeLinear gets its weights quantized per tensor by the
  runtime (``WeightBiasQuantization``, at every optimization level but "disabled"), silently
  undoing "keep this layer float". Such data-movement ops are kept float when they feed only
  float layers.
"""

from __future__ import annotations

import onnx_ir as ir

from irq.ir.model import QModel, node_label
from irq.quant.spec import DecisionSource, LayerDecision, Precision

#: Ops that onnxruntime moves a DequantizeLinear through (qdq_propagation.cc) or removes (Pad
#: fused into the next Conv, Identity eliminated), so that the DQ ends up feeding the next layer.
DQ_PROPAGATING = frozenset({"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Pad", "Identity"})
ACTIVATIONS = frozenset({"Relu", "Clip"})


def _float(decision: LayerDecision | None) -> bool:
    return decision is None or decision.precision.is_float


def _needs_float(work: QModel, node: ir.Node, movement: bool) -> list[LayerDecision | None] | None:
    """The consumers' decisions when ``node`` should follow them into float, else None."""
    if any(o.is_graph_output() for o in node.outputs):
        return None
    consumers = [work.plan.get(node_label(u.node)) for o in node.outputs for u in o.uses()]
    if not consumers or not all(_float(c) for c in consumers):
        return None
    if node.op_type in ACTIVATIONS:
        src = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
        return consumers if src is not None and not _float(work.plan.get(node_label(src))) else None
    return consumers if movement and node.op_type in DQ_PROPAGATING else None


def settle(work: QModel, reason: str, movement: bool = True) -> list[str]:
    """Apply the fixes above to ``work.plan`` (until nothing changes); return the labels changed.

    ``movement`` False leaves data-movement ops alone (scoring a MaxPool quantized alone).
    """
    nodes = list(work.graph)
    changed: list[str] = []
    again = True
    while again:
        again = False
        for node in reversed(nodes):
            label = node_label(node)
            decision = work.plan.get(label)
            if _float(decision):
                continue
            consumers = _needs_float(work, node, movement)
            if consumers is None:
                continue
            precision = next((c.precision for c in consumers if c is not None), Precision.FP32)
            work.plan[label] = LayerDecision(precision, f"{reason} (feeds only float layers)",
                                             decision.granularity,  # type: ignore[union-attr]
                                             source=DecisionSource.SENSITIVITY)
            changed.append(label)
            again = True
    return changed
