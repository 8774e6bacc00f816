"""Ranges one int8 scale cannot serve: Concats joining very different ranges, and sentinel-sized tensors.

A detector head concatenates box coordinates (0..640) with class scores (0..1); quantized with
one scale, every score rounds to 0. Before calibration the audit flags Concats that join a
bounded producer (Sigmoid, Softmax, Clip...) with an unbounded one; after calibration the plan
measures the ranges and keeps such a Concat, and everything downstream that only moves its
values, in float.
"""

from __future__ import annotations

import onnx_ir as ir

from irq.ir.model import node_label
from irq.quant.spec import TensorRange

#: Ratio of the widest to the narrowest input range above which one scale leaves the narrow
#: input fewer than 256/RATIO = 8 levels.
RATIO = 32.0
#: Producers whose outputs are bounded to a small known interval.
BOUNDED = frozenset({"Sigmoid", "Softmax", "HardSigmoid", "Tanh", "LogSoftmax"})
#: Ops that only move values: downstream of a float Concat they must stay float too, or they
#: would requantize the joined tensor with its combined range.
MOVERS = frozenset({"Concat", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split",
                    "Gather", "Identity"})


def _inputs(node: ir.Node) -> list[ir.Value]:
    return [v for v in node.inputs if v is not None and v.const_value is None and v.dtype == ir.DataType.FLOAT]


def static_suspects(graph: ir.Graph) -> list[dict[str, str]]:
    """Audit hazards: Concats mixing bounded and unbounded producers (ranges not known yet)."""
    found = []
    for node in graph:
        if node.op_type != "Concat":
            continue
        kinds = {(p.op_type in BOUNDED) for v in _inputs(node) if (p := v.producer()) is not None}
        if kinds == {True, False}:
            found.append({"kind": "concat-range-mismatch", "node": node_label(node), "op_type": "Concat",
                          "detail": "joins bounded outputs (sigmoid/softmax scores) with unbounded ones (e.g. box "
                                    "coordinates): one int8 scale can collapse the scores; the plan keeps it float "
                                    "when the calibrated ranges differ more than 32x"})
    return found


def _span(r: TensorRange) -> float:
    return max(abs(r.lo), abs(r.hi), 1e-12)


def mismatched_concats(graph: ir.Graph, ranges: dict[str, TensorRange]) -> dict[str, str]:
    """Concat label -> why, for each Concat whose calibrated input ranges differ more than RATIO."""
    found = {}
    for node in graph:
        if node.op_type != "Concat":
            continue
        spans = [(v.name, _span(ranges[v.name])) for v in _inputs(node) if v.name in ranges]
        if len(spans) < 2:
            continue
        wide, narrow = max(spans, key=lambda s: s[1]), min(spans, key=lambda s: s[1])
        if wide[1] / narrow[1] > RATIO:
            found[node_label(node)] = (f"hazard: concat-range-mismatch ({wide[0]} spans {wide[1]:.3g}, "
                                       f"{narrow[0]} {narrow[1]:.3g}: {wide[1] / narrow[1]:.0f}x)")
    return found


#: Beyond this magnitude a tensor has no useful int8 (or int16) scale: it is a mask or
#: sentinel (a transformer's attention mask is finfo(float32).min), not a signal.
HUGE = 1e6


def unrepresentable(graph: ir.Graph, ranges: dict[str, TensorRange]) -> dict[str, str]:
    """Node label -> why, for nodes that write or read a float tensor whose calibrated range passes HUGE.

    all-MiniLM's mask Add (scores + finfo.min) gets an int8 scale of 1.3e36 on TFLite, which
    the converter refuses; whatever reads such a tensor must read it in float too.
    """
    found: dict[str, str] = {}
    for node in graph:
        for v in node.outputs:
            r = ranges.get(v.name or "")
            if r is None or v.dtype != ir.DataType.FLOAT or _span(r) <= HUGE:
                continue
            why = f"hazard: unrepresentable-range ({v.name} spans {_span(r):.3g}: no int8 scale holds it)"
            found.setdefault(node_label(node), why)
            for use in v.uses():
                found.setdefault(node_label(use.node), why)
    return found


def downstream_movers(graph: ir.Graph, labels: set[str]) -> dict[str, str]:
    """The value-moving nodes fed (directly or through other movers) by the nodes ``labels``."""
    by_label = {node_label(n): n for n in graph}
    found: dict[str, str] = {}
    stack = [by_label[label] for label in labels if label in by_label]
    while stack:
        node = stack.pop()
        for out in node.outputs:
            for use in out.uses():
                user = use.node
                label = node_label(user)
                if user.op_type in MOVERS and label not in found and label not in labels:
                    found[label] = f"follows {node_label(node)} (keeps its float range)"
                    stack.append(user)
    return found
