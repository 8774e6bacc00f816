"""The irq IR: an onnx-ir model plus irq's quantization annotations.

The graph itself is an ``onnx_ir.Model``; quantization decisions live beside it as data
(calibrated ranges per value, a precision decision per node) until a mechanics pass
materialises them as QuantizeLinear/DequantizeLinear nodes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_ir as ir

from irq.ir.findings import Analysis
from irq.quant.spec import LayerDecision, Precision, Scheme, TensorRange

if TYPE_CHECKING:
    from irq.data import DataSet
    from irq.pipeline.recipe import Recipe


@dataclass
class QModel:
    """A model under compilation and everything the passes have learnt about it."""

    model: ir.Model
    name: str = "model"
    scheme: Scheme = field(default_factory=Scheme)
    default_precision: Precision = Precision.INT8
    recipe: Recipe | None = None
    ranges: dict[str, TensorRange] = field(default_factory=dict)
    plan: dict[str, LayerDecision] = field(default_factory=dict)
    calibration: DataSet | None = None
    analysis: Analysis = field(default_factory=Analysis)
    history: list[str] = field(default_factory=list)
    #: Set by plan-precision (a plan may be empty when nothing is quantizable).
    planned: bool = False
    #: The pass that rewrote the graph after the plan was made ("" while the plan is current).
    stale_plan: str = ""
    #: Per layer, the mean output shift its quantized weights cause (bias-correct measures it,
    #: insert-qdq adds it to the bias of each layer whose weights it quantizes).
    bias_shifts: dict[str, np.ndarray] = field(default_factory=dict)
    #: Per layer, the weight scales a search chose in place of max|w| / qmax (weight-scales sets
    #: them; bias-correct and insert-qdq quantize with them).
    weight_scales: dict[str, np.ndarray] = field(default_factory=dict)
    #: Per layer, integer weights a learned rounding chose (adaround; with that layer's
    #: ``weight_scales``), used in place of round-to-nearest.
    rounded_weights: dict[str, np.ndarray] = field(default_factory=dict)
    #: Layers whose rounding was fitted to the float model's output on the inputs the quantized
    #: model gives them (adaround ``inputs=quantized``): it already absorbs their output's mean
    #: shift and the error upstream, which bias-correct would partly undo, so it leaves them alone.
    output_matched: set[str] = field(default_factory=set)
    #: Per layer input (a value name), its mean over the calibration samples (axis 0), which
    #: ``calibrate{input-means=N}`` measures (first N samples) in its sweep so that bias-correct needs no run.
    input_means: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def graph(self) -> ir.Graph:
        """The main graph."""
        return self.model.graph

    def plan_problems(self) -> list[str]:
        """Why the precision plan cannot be carried out as it stands (empty: it can)."""
        if self.stale_plan:
            return [f"the precision plan is stale: {self.stale_plan!r} rewrote the graph after plan-precision "
                    "(run plan-precision after it)"]
        if not self.plan and not self.planned:
            return ["there is no precision plan (run plan-precision first)"]
        return []

    def to_proto(self) -> onnx.ModelProto:
        """Serialize the graph (with any Q/DQ nodes already inserted) to an ONNX proto."""
        return ir.serde.serialize_model(self.model)

    def to_bytes(self) -> bytes:
        """The serialized ONNX model as bytes, for in-memory onnxruntime sessions."""
        return self.to_proto().SerializeToString()

    def clone(self, share_tensors: bool = False) -> QModel:
        """A deep copy of the graph with shallow copies of the annotations.

        ``share_tensors``: the copy's initializers are the same tensor objects (onnx-ir's own
        clone, no serialization: 3x faster on EfficientNet-Lite0), for callers whose passes only
        ever add tensors, as the sensitivity candidates' insert-qdq does.
        """
        model = self.model.clone() if share_tensors else ir.serde.deserialize_model(self.to_proto())
        return dataclasses.replace(self, model=model, ranges=dict(self.ranges),
                                   plan=dict(self.plan), analysis=self.analysis.copy(),
                                   history=list(self.history), bias_shifts=dict(self.bias_shifts),
                                   weight_scales=dict(self.weight_scales), rounded_weights=dict(self.rounded_weights),
                                   output_matched=set(self.output_matched),
                                   input_means=dict(self.input_means))

    def save(self, path: Path) -> None:
        """Write the graph as one self-contained ONNX file (atomically)."""
        from irq.io import atomic_write_bytes

        atomic_write_bytes(path, self.to_bytes())


def node_label(node: ir.Node) -> str:
    """A stable human-readable name for a node (its name, else op type and first output)."""
    if node.name:
        return node.name
    out = node.outputs[0].name if node.outputs else "?"
    return f"{node.op_type}:{out}"


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy array behind a value when it is an initializer or Constant output."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.domain == "":
        attr = producer.attributes.get("value")
        if attr is not None:
            return attr.as_tensor().numpy()
    return None


def only_reader(value: ir.Value) -> ir.Node | None:
    """The one node reading ``value``, when exactly one does and it is not a graph output."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0][0]


def float_value_names(graph: ir.Graph) -> list[str]:
    """Names of float32 activation values (node outputs and graph inputs) in graph order."""
    names = [v.name for v in graph.inputs if v.dtype == ir.DataType.FLOAT and v.name]
    for node in graph:
        for out in node.outputs:
            if out.name and out.dtype == ir.DataType.FLOAT and out.const_value is None:
                names.append(out.name)
    return names
