"""Precision planning: decide, per node, how it runs in the artifact. Policy only, no rewriting.

Sources, weakest first: the target's default precision, the recipe's layer rules, and
decisions already pinned in the plan (by hand or by the mixed-precision search).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from irq.ir.analysis import has_constant_weight
from irq.ir.model import QModel, constant_array, node_label
from irq.pipeline.infra import Pass, PassResult
from irq.quant.hazards import downstream_movers, mismatched_concats, unrepresentable
from irq.quant.spec import DecisionSource, Granularity, LayerDecision, Precision

#: Ops that static int8 quantizes (inputs and outputs get Q/DQ). The rest run in float,
#: reading dequantized values.
STATIC_INT8_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Resize", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Pad", "Split", "Slice",
})
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
DYNAMIC_OPS = frozenset({"MatMul", "Gemm", "LSTM", "GRU"})
#: Embedding tables smaller than this stay float: their rows cost less than the rescale.
MIN_TABLE_ELEMENTS = 1 << 16


def _moves_floats(node: ir.Node) -> bool:
    """True when the node computes on float activations (a Concat of int64 shape pieces does not)."""
    values = [v for v in (*node.inputs, *node.outputs) if v is not None and v.const_value is None]
    return any(v.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16, None) for v in values) if values else False


def eligible(node: ir.Node, precision: Precision, extra_int8: frozenset[str] = frozenset()) -> bool:
    """Whether ``precision`` is meaningful for ``node`` (else the node stays float).

    Only nodes that compute on float values: integer shape arithmetic (Shape -> Gather ->
    Concat -> Reshape's second input) is never a layer.
    """
    if node.domain not in ("", "ai.onnx") or not _moves_floats(node):
        return False
    if precision in (Precision.INT8, Precision.INT16):
        return node.op_type in STATIC_INT8_OPS or node.op_type in extra_int8
    if precision in (Precision.INT8_WEIGHT, Precision.DYNAMIC_INT8) and node.op_type == "Gather":
        table = constant_array(node.inputs[0])
        return (table is not None and table.ndim == 2 and table.size >= MIN_TABLE_ELEMENTS
                and node.attributes.get_int("axis", 0) == 0)
    if precision == Precision.INT8_WEIGHT:
        return node.op_type in WEIGHT_OPS and has_constant_weight(node)
    if precision == Precision.DYNAMIC_INT8:
        return node.op_type in DYNAMIC_OPS and has_constant_weight(node)
    if precision == Precision.INT4_WEIGHT:
        return node.op_type in ("MatMul", "Gemm") and has_constant_weight(node)
    return True


def _recurrent_with_weights(node: ir.Node) -> bool:
    """An LSTM/GRU whose W is a constant: its weights can be stored int8 even in a static plan."""
    return node.domain in ("", "ai.onnx") and node.op_type in ("LSTM", "GRU") and has_constant_weight(node)


def float_precision(default: Precision) -> Precision:
    """What 'skip' means for a target: fp16 for fp16-compute targets, else fp32."""
    return Precision.FP16 if default == Precision.FP16 else Precision.FP32


@dataclass(frozen=True)
class PlanPrecision(Pass):
    """Fill ``qmodel.plan`` with one LayerDecision per node that can be quantized."""

    name = "plan-precision"
    rewrites_graph = False
    #: Keep Concats whose calibrated input ranges differ > 32x (and what only moves their values) float.
    range_hazards: bool = True
    #: Ops beyond STATIC_INT8_OPS that the target's converter quantizes anyway (TFLite's PReLU,
    #: Tanh, Softmax...): planned, they become layers the budget search can keep float.
    also_int8: tuple[str, ...] = ()

    def run(self, qmodel: QModel) -> PassResult:
        """Decide each eligible node's precision; pinned decisions are kept."""
        default = qmodel.default_precision
        rules = qmodel.recipe.layers if qmodel.recipe is not None else ()
        by_default = Granularity.PER_CHANNEL if qmodel.scheme.per_channel else Granularity.PER_TENSOR
        extra = frozenset(self.also_int8)
        plan: dict[str, LayerDecision] = {}
        for node in qmodel.graph:
            label = node_label(node)
            pinned = qmodel.plan.get(label)
            if pinned is not None and pinned.source is not DecisionSource.DEFAULT:
                plan[label] = pinned
                continue
            decision = LayerDecision(default, granularity=by_default) if eligible(node, default, extra) else None
            if decision is None and default in (Precision.INT8, Precision.INT16) and _recurrent_with_weights(node):
                decision = LayerDecision(Precision.DYNAMIC_INT8, "no static int8 recurrent kernel: int8 weights, "
                                         "float math", by_default)
            for rule in rules:
                if not rule.matches(label, node.op_type):
                    continue
                precision = decision.precision if decision else default
                if rule.precision:
                    precision = (float_precision(default) if rule.precision == "skip"
                                 else Precision(rule.precision))
                granularity = (Granularity(rule.granularity) if rule.granularity
                               else decision.granularity if decision else by_default)
                if precision.is_float or eligible(node, precision, extra):
                    decision = LayerDecision(precision, f"recipe {rule.name or rule.op_type}", granularity,
                                             source=DecisionSource.RECIPE)
            if decision is not None:
                plan[label] = decision
        if self.range_hazards and default in (Precision.INT8, Precision.INT16) and qmodel.ranges:
            _apply_range_hazards(qmodel, plan, float_precision(default))
        qmodel.plan = plan
        qmodel.planned, qmodel.stale_plan = True, ""
        return PassResult(qmodel, False)

    def ensures(self, qmodel: QModel) -> list[str]:
        """Every decision names a node of the graph."""
        labels = {node_label(n) for n in qmodel.graph}
        gone = sorted(set(qmodel.plan) - labels)
        return [f"the plan names nodes the graph does not have: {', '.join(gone[:5])}"] if gone else []


def _apply_range_hazards(qmodel: QModel, plan: dict[str, LayerDecision], float_kind: Precision) -> None:
    """Defaults (never recipe rules or pinned decisions) give way to a measured range hazard."""
    hazards = mismatched_concats(qmodel.graph, qmodel.ranges)
    hazards.update(downstream_movers(qmodel.graph, set(hazards)))
    huge = unrepresentable(qmodel.graph, qmodel.ranges)
    if not hazards and not huge:
        return
    applied = {}
    # Sentinel-sized tensors make unplanned nodes float too: a full-integer converter (TFLite)
    # quantizes whatever the plan does not keep float, and a mask has no int8 form at all.
    for found, unplanned_too in ((hazards, False), (huge, True)):
        for label, why in found.items():
            d = plan.get(label)
            if (d is None and unplanned_too) or \
                    (d is not None and d.source is DecisionSource.DEFAULT and not d.precision.is_float):
                plan[label] = LayerDecision(float_kind, why, d.granularity if d else Granularity.PER_TENSOR,
                                            source=DecisionSource.HAZARD)
                applied[label] = why
    qmodel.analysis.record("plan-precision", range_hazards=applied)
