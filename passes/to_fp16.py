"""FP16 conversion: float16 weights and compute, float32 graph I/O unless asked otherwise.

onnxconverter-common's converter does the type surgery (and keeps ops without fp16 kernels
in float32); this pass feeds it the plan, so layers planned fp32 stay fp32.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass
from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from irq.ir.edit import Namer, add_initializer
from irq.ir.model import QModel
from irq.pipeline.infra import Pass, PassResult
from irq.quant.spec import Precision


def _unshare_small_initializers(graph: ir.Graph, limit: int = 1024) -> None:
    """Give each consumer its own copy of a small shared initializer.

    The converter decides an initializer's type once; shared between an op it keeps in
    float32 and one it converts, one side ends up with the wrong type.
    """
    namer = Namer(graph)
    for value in list(graph.initializers.values()):
        uses = list(value.uses())
        if value.const_value is None or value.const_value.size > limit or len(uses) < 2:
            continue
        array = value.const_value.numpy()
        for use in uses[1:]:
            copy = add_initializer(graph, namer, array.copy(), value.name or "const")
            use.node.replace_input_with(use.idx, copy)


def _name_unused_outputs(graph: ir.Graph) -> None:
    """Give omitted optional outputs (an LSTM's unused Y_h) a name of their own.

    The converter's topological sort treats the empty name as a value: a node that omits an
    output and an optional input then waits for itself, and the sort fails.
    """
    taken = {v.name for node in graph for v in node.outputs if v.name}
    count = 0
    for node in graph:
        for out in node.outputs:
            if not out.name:
                while f"{node.name or node.op_type}_unused_{count}" in taken:
                    count += 1
                out.name = f"{node.name or node.op_type}_unused_{count}"
                taken.add(out.name)


def _outputs_read_inside(graph: ir.Graph) -> None:
    """Give a graph output that other nodes also read an Identity of its own.

    With float32 I/O the converter casts each output back to float32 and hands it the output's
    name, but nodes that read the output inside the graph keep that name and so get the float32
    copy where they expect float16 (an LSTM fed from a Unsqueeze of a returned tensor: "Type
    parameter (T) of Optype (LSTM) bound to different types").
    """
    namer = Namer(graph)
    for i, value in enumerate(list(graph.outputs)):
        if not list(value.uses()) or value.producer() is None:
            continue
        name = value.name
        value.name = namer.fresh(f"{name}_inner")
        identity = ir.Node("", "Identity", [value], outputs=[ir.Value(name=name, type=value.type,
                                                                       shape=value.shape)])
        graph.append(identity)
        graph.outputs[i] = identity.outputs[0]


def _cast_integers_to_fp16(proto: onnx.ModelProto) -> None:
    """Casts from integers/bools to float32 feed float16 math after conversion; make them fp16.

    The converter leaves them float32 (MiniLM's attention mask), which onnxruntime rejects.
    Blocked ops get their own fp16->fp32 casts from the converter, so this is consistent.
    """
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    integer = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL, onnx.TensorProto.INT8,
               onnx.TensorProto.UINT8, onnx.TensorProto.INT16}
    outputs = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        if node.op_type != "Cast" or types.get(node.input[0]) not in integer or node.output[0] in outputs:
            continue
        to = next((a for a in node.attribute if a.name == "to"), None)
        if to is not None and to.i == onnx.TensorProto.FLOAT:
            to.i = onnx.TensorProto.FLOAT16


#: The converter leaves Clip's min/max initializers in float32 while converting its input,
#: which onnxruntime rejects (MiniLM's normalisation); Clip stays float32 instead.
#: ReduceMean/Pow/Sqrt (LayerNorm's variance) stay float32 too: a variance squared in fp16
#: overflows, and fp16 casts inside the pattern break onnxruntime's SimplifiedLayerNormFusion
#: ("Attempting to get index by a name which does not exist", PP-OCRv4's recogniser).
_KEEP_FP32_OPS = ("Clip", "ReduceMean", "Pow", "Sqrt")


@dataclass(frozen=True)
class ToFP16(Pass):
    """Convert the graph to float16; ``keep-io=false`` makes inputs/outputs float16 too."""

    name = "to-fp16"
    keep_io: bool = True

    def run(self, qmodel: QModel) -> PassResult:
        """Convert, keeping the nodes the plan pins to fp32 in float32."""
        if self.name in qmodel.analysis.passes:
            return PassResult(qmodel, False)  # converted already: converting again would be wrong
        keep = [name for name, d in qmodel.plan.items() if d.precision == Precision.FP32]
        _unshare_small_initializers(qmodel.graph)
        _name_unused_outputs(qmodel.graph)
        if self.keep_io:
            _outputs_read_inside(qmodel.graph)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it warns for every clamped tiny weight
            proto = convert_float_to_float16(qmodel.to_proto(), keep_io_types=self.keep_io,
                                             op_block_list=[*DEFAULT_OP_BLOCK_LIST, *_KEEP_FP32_OPS],
                                             node_block_list=keep,
                                             disable_shape_infer=False)
        _cast_integers_to_fp16(proto)
        qmodel.model = ir.serde.deserialize_model(proto)
        RemoveUnusedNodesPass()(qmodel.model)  # the float32 initializers the converter replaced
        qmodel.analysis.record(self.name, kept_fp32_nodes=len(keep))
        return PassResult(qmodel, True)
