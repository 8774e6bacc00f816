"""Layers as the sensitivity analysis sees them: groups of plan entries switched together.

A weight layer (Conv, Gemm, MatMul...) and a ReLU/Clip that only it feeds form one unit:
Q/DQ insertion folds that activation into the layer's output quantizer, so quantizing one
without the other is not a configuration any runtime executes. Every other planned node
(Add, Pad, pooling...) is a unit of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from irq.ir.analysis import COMPUTE_OPS
from irq.ir.model import QModel, constant_array, node_label
from irq.quant.spec import Precision

_FOLDABLE = frozenset({"Relu", "Clip"})


@dataclass(frozen=True)
class Unit:
    """One switchable layer: its plan labels, output value and float weight size."""

    name: str
    op_type: str
    members: tuple[str, ...]
    output: str
    params: int
    bytes: int


def _weights(node: ir.Node) -> tuple[int, int]:
    """(elements, bytes) of a node's constant float inputs (weights and biases)."""
    params = size = 0
    for v in node.inputs[1:]:
        a = constant_array(v)
        if a is not None and a.dtype.kind == "f":
            params += int(a.size)
            size += int(a.nbytes)
    return params, size


def _quantized(qmodel: QModel, label: str) -> bool:
    d = qmodel.plan.get(label)
    return d is not None and not d.precision.is_float


def find_units(qmodel: QModel) -> list[Unit]:
    """The units of a planned model, in graph order (nodes the plan keeps float are left out)."""
    units: list[Unit] = []
    absorbed: set[str] = set()
    for node in qmodel.graph:
        label = node_label(node)
        if label in absorbed or not _quantized(qmodel, label) or not node.outputs:
            continue
        members = [label]
        # an LSTM may omit its first output (Y) and return only its states
        out = next((o for o in node.outputs if o.name), node.outputs[0])
        if node.op_type in COMPUTE_OPS:
            uses = list(out.uses())
            if len(uses) == 1 and not out.is_graph_output():
                act = uses[0].node
                act_label = node_label(act)
                if act.op_type in _FOLDABLE and _quantized(qmodel, act_label) and act.outputs:
                    members.append(act_label)
                    absorbed.add(act_label)
                    out = act.outputs[0]
        params, size = _weights(node) if node.op_type in COMPUTE_OPS else (0, 0)
        units.append(Unit(label, node.op_type, tuple(members), out.name or "", params, size))
    return units


def overrides_for(units: list[Unit], precision: Precision) -> dict[str, Precision]:
    """Plan overrides that set every member of ``units`` to ``precision``."""
    return {label: precision for u in units for label in u.members}
