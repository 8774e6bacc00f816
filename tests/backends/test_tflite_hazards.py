"""TFLite backend pieces that need no TensorFlow: the ONNX rewrites and the output capture."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from irq.backends.tflite import hazards
from irq.backends.tflite.offline import captured_output
from irq.errors import LoweringError
from irq.quant.spec import TensorRange


def _pool_model(pool_attrs: dict, relu: bool = False, size: int = 9) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
    nodes.append(helper.make_node("MaxPool", ["r" if relu else "c"], ["y"], name="pool", **pool_attrs))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _conv_min(model: onnx.ModelProto, x: np.ndarray) -> float:
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    del probe.graph.output[:]
    probe.graph.output.extend([helper.make_empty_tensor_value_info("c")])
    return float(_run(probe, x).min())


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 0], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [3, 3], "strides": [1, 1], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [2, 2], "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [2, 2]},
], ids=["pads", "ceil", "same-upper", "same-lower", "dilated"])
def test_split_maxpool_padding_is_exact(attrs: dict) -> None:
    model = _pool_model(attrs)
    x = np.random.default_rng(1).normal(size=(2, 3, 9, 9)).astype(np.float32)
    lo = _conv_min(model, x)
    assert lo < 0, "the pooled tensor must hold negatives, or zero padding would pass too"
    ir_model = ir.serde.deserialize_model(model)
    fixes = hazards.split_maxpool_padding(ir_model.graph, {"c": TensorRange(lo, 10.0)})
    assert [(f.node, f.source) for f in fixes] == [("pool", "range")]
    pool = next(n for n in ir_model.graph if n.op_type == "MaxPool")
    assert pool.inputs[0].producer().op_type == "Pad"
    assert not any(pool.attributes.get_ints("pads", [0]))
    assert pool.attributes.get_int("ceil_mode", 0) == 0
    rewritten = ir.serde.serialize_model(ir_model)
    np.testing.assert_array_equal(_run(rewritten, x), _run(model, x))


def test_relu_producer_pads_with_implicit_zero() -> None:
    model = _pool_model({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, relu=True)
    ir_model = ir.serde.deserialize_model(model)
    fixes = hazards.split_maxpool_padding(ir_model.graph, {})
    assert [(f.pad_value, f.source) for f in fixes] == [(0.0, "relu")]
    pad = next(n for n in ir_model.graph if n.op_type == "Pad")
    assert len(pad.inputs) == 2  # no constant input: onnx2tf emits PAD, which XNNPACK delegates
    x = np.random.default_rng(2).normal(size=(2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(_run(ir.serde.serialize_model(ir_model), x), _run(model, x))


def test_missing_range_uses_observer_or_fails() -> None:
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    graph = ir.serde.deserialize_model(_pool_model(attrs)).graph
    with pytest.raises(LoweringError, match="c"):
        hazards.split_maxpool_padding(graph, {})
    graph = ir.serde.deserialize_model(_pool_model(attrs)).graph
    fixes = hazards.split_maxpool_padding(graph, {}, observe=lambda names: dict.fromkeys(names, -3.5))
    assert [(f.pad_value, f.source) for f in fixes] == [(-3.5, "observed")]


def test_structural_only_skips_unbounded_maxpools() -> None:
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    graph = ir.serde.deserialize_model(_pool_model(attrs)).graph
    assert hazards.split_maxpool_padding(graph, {"c": TensorRange(-1.0, 1.0)}, structural_only=True) == []
    graph = ir.serde.deserialize_model(_pool_model(attrs, relu=True)).graph
    fixes = hazards.split_maxpool_padding(graph, {}, structural_only=True)
    assert [f.source for f in fixes] == ["relu"]


def test_unpadded_maxpool_is_left_alone() -> None:
    model = _pool_model({"kernel_shape": [3, 3], "strides": [2, 2]})
    graph = ir.serde.deserialize_model(model).graph
    assert hazards.split_maxpool_padding(graph, {}) == []
    assert [n.op_type for n in graph] == ["Conv", "MaxPool"]


def test_qdq_graph_is_refused() -> None:
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q_x"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq_x")]
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    model = ir.serde.deserialize_model(proto)
    with pytest.raises(LoweringError, match="q_x"):
        hazards.check_float_graph(model.graph, "tiny")


def test_captured_output_collects_python_and_native_writes(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    with captured_output() as printed:
        print("from python")
        os.write(1, b"from native stdout\n")
        os.write(2, b"from native stderr\n")
        assert "from native stdout" in printed.text  # readable while the block runs
    assert capfd.readouterr() == ("", "")
    assert {"from python", "from native stdout", "from native stderr"} <= set(printed.text.splitlines())
