"""The lowering driver: ONNX graph (the IR) -> one MIL program, built entirely in memory.

Inputs get fixed shapes (Core ML programs here are static): a dynamic batch becomes 1, any
other dynamic dimension takes ``options["input_shapes"][name]``, else the calibration data's
size, else ``options["sequence_length"]``; otherwise lowering fails naming the input. int64
inputs become int32 (Core ML has no 64-bit tensors); the runner converts at its boundary.

Each node is either folded (all its inputs are constants: Shape-derived subgraphs, Constant,
ConstantOfShape...; evaluated with ONNX's reference implementation) or lowered by the
registry. Nothing touches the disk here, so an unsupported op fails before any file exists.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Function, Program, types
from onnx.reference import ReferenceEvaluator

from irq.backends.coreml import ops_math, ops_nn, ops_quant, ops_resize, ops_tensor  # noqa: F401  (registers)
from irq.backends.coreml.context import LoweringContext, QuantWeight, is_var
from irq.backends.coreml.deploy import Deployment
from irq.backends.coreml.registry import LOWERINGS
from irq.errors import LoweringError
from irq.ir.model import QModel

_INPUT_TYPES = {ir.DataType.FLOAT: types.fp32, ir.DataType.FLOAT16: types.fp16,
                ir.DataType.INT64: types.int32, ir.DataType.INT32: types.int32}
_NEVER_FOLD = {"DequantizeLinear"}  # folding a DQ would turn an int8 weight back into float


@dataclass
class LoweredProgram:
    """A MIL program and what the read-back needs to know about it."""

    program: Program
    inputs: list[dict[str, Any]]  # onnx name, coreml name, shape, onnx dtype
    outputs: list[dict[str, Any]]
    weights: list[dict[str, Any]] = field(default_factory=list)
    onnx_census: dict[str, int] = field(default_factory=dict)


def input_shapes(qmodel: QModel, options: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The fixed shape of every graph input (see the module docstring for the rules)."""
    given = options.get("input_shapes") or {}
    seq = options.get("sequence_length")
    calib = qmodel.calibration.inputs if qmodel.calibration is not None else {}
    shapes: dict[str, tuple[int, ...]] = {}
    for v in _graph_inputs(qmodel.graph):
        name = str(v.name)
        if name in given:
            shapes[name] = tuple(int(d) for d in given[name])
            continue
        sample = calib.get(name)
        if v.shape is None:
            if sample is None:
                raise LoweringError(f"input {name!r} has no shape; give options['input_shapes']")
            shapes[name] = (1, *sample.shape[1:])
            continue
        dims = []
        for i, d in enumerate(v.shape):
            if isinstance(d, int):
                dims.append(d)
            elif i == 0:
                dims.append(1)
            elif sample is not None and sample.ndim == len(v.shape):
                dims.append(int(sample.shape[i]))
            elif seq is not None:
                dims.append(int(seq))
            else:
                raise LoweringError(f"input {name!r} dimension {i} ({d}) is dynamic; give "
                                    "options['input_shapes'] or options['sequence_length']")
        shapes[name] = tuple(dims)
    return shapes


def _graph_inputs(graph: ir.Graph) -> list[ir.Value]:
    # An input that is also an initializer (IR < 4) is a constant with a default here.
    return [v for v in graph.inputs if v.const_value is None]


def build_program(qmodel: QModel, deployment: Deployment, options: dict[str, Any]) -> LoweredProgram:
    """Lower the whole graph to a MIL program; LoweringError names the first node that fails."""
    graph = qmodel.graph
    opset = qmodel.model.opset_imports.get("", 0) or qmodel.model.opset_imports.get("ai.onnx", 0)
    ctx = LoweringContext(deployment, opset)
    shapes = input_shapes(qmodel, options)
    specs, inputs = {}, []
    for v in _graph_inputs(graph):
        if v.dtype not in _INPUT_TYPES:
            raise LoweringError(f"input {v.name!r} has dtype {v.dtype}, which Core ML cannot take")
        onnx_name = str(v.name)
        name = ctx.identifier(onnx_name)
        specs[name] = mb.TensorSpec(shape=shapes[onnx_name], dtype=_INPUT_TYPES[v.dtype])
        inputs.append({"onnx": onnx_name, "coreml": name, "shape": list(shapes[onnx_name]),
                       "dtype": np.dtype(v.dtype.numpy()).name})
    for name, init in graph.initializers.items():
        if init.const_value is not None:
            ctx.values[name] = init.const_value.numpy()
    with Function(specs, opset_version=deployment.ct_target) as func:
        for entry in inputs:
            ctx.values[entry["onnx"]] = func.inputs[entry["coreml"]]
        for node in graph:
            _lower_node(ctx, node, opset_imports=dict(qmodel.model.opset_imports))
        ctx.node = None
        mil_outputs, outputs = _outputs(ctx, graph)
        func.set_outputs(mil_outputs)
    program = Program()
    program.add_function("main", func)
    census = Counter(n.op_type for n in graph)
    return LoweredProgram(program, inputs, outputs, ctx.weights, dict(census))


def _lower_node(ctx: LoweringContext, node: ir.Node, opset_imports: dict[str, int]) -> None:
    ctx.node = node
    if node.domain not in ("", "ai.onnx"):
        raise ctx.error(f"custom-domain op {node.domain}::{node.op_type} is not supported")
    if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
        raise ctx.error("control flow (subgraph attributes) is not supported by the Core ML backend")
    raws = [ctx.raw(node, i) for i in range(len(node.inputs))]
    if node.op_type not in _NEVER_FOLD and all(r is None or isinstance(r, np.ndarray) for r in raws):
        results = _fold(ctx, node, raws, opset_imports)
    else:
        lowering = LOWERINGS.get(node.op_type)
        if lowering is None:
            raise ctx.error(f"op type {node.op_type} is not supported by the Core ML backend")
        try:
            results = lowering(ctx, node)
        except (ValueError, TypeError, AssertionError, NotImplementedError) as e:
            # The MIL builder validates types and shapes with these; say which node it was.
            raise ctx.error(f"Core ML rejected the lowering: {e}") from e
    if not isinstance(results, (list, tuple)):
        results = [results]
    for out, res in zip(node.outputs, results, strict=False):
        if out.name:
            ctx.values[out.name] = res


def _fold(ctx: LoweringContext, node: ir.Node, raws: list, opset_imports: dict[str, int]) -> list:
    proto = ir.serde.serialize_node(node)
    feeds = {name: raw for name, raw in zip(proto.input, raws, strict=False) if name}
    try:
        results = ReferenceEvaluator(proto, opsets=opset_imports).run(None, feeds)
    except Exception as e:  # the reference implementation raises many types; name the node
        raise ctx.error(f"constant folding failed: {e}") from e
    return [np.asarray(r) for r in results]


def _outputs(ctx: LoweringContext, graph: ir.Graph) -> tuple[list, list[dict[str, Any]]]:
    mil_outputs, outputs, seen = [], [], set()
    for v in graph.outputs:
        x = ctx.values.get(v.name)
        if x is None or isinstance(x, (np.ndarray, QuantWeight)) or not is_var(x):
            raise LoweringError(f"graph output {v.name!r} is a constant; Core ML outputs must be computed")
        if x.dtype == types.bool:
            x = mb.cast(x=x, dtype="int32")  # Core ML outputs cannot be bool
        if id(x) in seen or x.op is None:  # an input or a repeated output needs its own var
            x = mb.identity(x=x)
        seen.add(id(x))
        mil_outputs.append(x)
        outputs.append({"onnx": v.name, "dtype": np.dtype(v.dtype.numpy()).name if v.dtype else "float32"})
    return mil_outputs, outputs
