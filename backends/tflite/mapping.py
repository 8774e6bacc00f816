"""Which TFLite tensor and operator is which ONNX value and node.

The converter names a tensor after the TensorFlow ops fused into its producer, joined by ';'
(``model_3/n9__relu1/Relu;model_3/n8__conv1/BiasAdd``); each part holds the Keras layer name,
which :mod:`keras_build` made unique and attributed to an ONNX node. A tensor is an ONNX value
when one of its parts is the layer that produces that value; when several are (a conv fused
with its ReLU), the value furthest downstream is the tensor. The first part names the op the
fused tensor comes out of: when that is a layer inside an ONNX node (HardSigmoid is x*alpha+beta
then a clip), the tensor is that node's intermediate and maps to no ONNX value. Graph inputs
and outputs are matched through the signature instead, whose names irq chose. Every match is checked for equal
element counts, so a naming surprise drops a tensor from the map rather than mislabelling it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import onnx_ir as ir

from irq.backends.tflite.flatmodel import FlatModel
from irq.backends.tflite.keras_build import KerasBuild
from irq.ir.model import node_label


@dataclass
class TensorMap:
    """TFLite tensor indices -> ONNX value names, and TFLite operators -> ONNX node labels."""

    values: dict[int, str] = field(default_factory=dict)
    op_nodes: dict[int, set[str]] = field(default_factory=dict)


def layer_names(tensor_name: str) -> list[str]:
    """Every name scope in a fused TFLite tensor name; the Keras layer names are among them.

    A part reads ``layer/op`` or, when the model was called as a layer, ``model_3/layer/op``.
    """
    return [scope for part in tensor_name.split(";") for scope in part.split("/")[:-1]]


def map_tensors(flat: FlatModel, build: KerasBuild, graph: ir.Graph) -> TensorMap:
    """Map the activation tensors and operators of ``flat`` back to the ONNX graph."""
    order: dict[str, int] = {}
    producers: dict[str, str] = {}
    shapes: dict[str, list] = {}
    for i, node in enumerate(graph):
        for out in node.outputs:
            if out.name:
                order[out.name] = i
                producers[out.name] = node_label(node)
    for value in [*graph.inputs, *(o for n in graph for o in n.outputs)]:
        if value.name:
            shapes[value.name] = [d if isinstance(d, int) else None for d in (value.shape or [])]
    layer_values: dict[str, list[str]] = {}
    for value, layer in build.value_layers.items():
        layer_values.setdefault(layer, []).append(value)

    result = TensorMap()
    sig_in, sig_out = flat.signature()
    by_signature = {sig_in.get(s.tflite_name): s.onnx_name for s in build.inputs}
    by_signature.update({sig_out.get(s.tflite_name): s.onnx_name for s in build.outputs})
    for index in flat.activations():
        name = by_signature.get(index)
        if name is None:
            layers = layer_names(flat.tensor_name(index))
            first_op = flat.tensor_name(index).split(";")[0]
            final = [scope for scope in layer_names(first_op) if scope in build.layer_nodes]
            if final and final[-1] not in layer_values:
                continue  # the fused op ends inside an ONNX node (HardSigmoid's x*alpha): no ONNX value
            candidates = [v for layer in layers for v in layer_values.get(layer, [])]
            name = max(candidates, key=lambda v: order.get(v, -1)) if candidates else None
        if name is not None and _same_size(list(flat.tensor(index).shape), shapes.get(name)):
            result.values[index] = name
    for op in flat.ops():
        nodes = {build.layer_nodes[layer] for t in op.outputs if t >= 0
                 for layer in layer_names(flat.tensor_name(t)) if layer in build.layer_nodes}
        nodes |= {producers[result.values[t]] for t in op.outputs
                  if t in result.values and result.values[t] in producers}
        result.op_nodes[op.index] = nodes
    return result


def _same_size(tflite_shape: list[int], onnx_shape: list | None) -> bool:
    """True when the element counts agree (layouts differ, counts do not); batch may differ."""
    if onnx_shape is None or not onnx_shape:
        return True  # unknown or scalar: nothing to check against
    if len(tflite_shape) == 0:
        return all(d == 1 for d in onnx_shape if d is not None)
    tail = onnx_shape[1:]
    if any(d is None for d in tail):
        return True
    batch = onnx_shape[0] if onnx_shape[0] is not None else tflite_shape[0]
    return math.prod(tflite_shape) == batch * math.prod(tail)
