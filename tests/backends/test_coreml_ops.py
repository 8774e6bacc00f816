"""Core ML backend, one ONNX op at a time: lowered, read back, evaluated, compared with onnxruntime.

Each case is a tiny float graph lowered for coreml-fp32, so the comparison with onnxruntime is
tight (fp32 arithmetic on both sides): it checks the lowering's reading of ONNX semantics
(attributes, defaults, pads order, broadcasting) against MIL's, through the read-back evaluator.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("coremltools")

from irq.backends.coreml import CoreMLBackend
from irq.ir.model import QModel
from irq.pipeline.targets import TARGETS

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def rand(*shape: int, positive: bool = False) -> np.ndarray:
    x = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(x) + 0.1 if positive else x


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


@dataclasses.dataclass
class Case:
    id: str
    nodes: list
    inputs: dict[str, np.ndarray]
    inits: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    outputs: tuple[tuple[str, int], ...] = (("y", F),)
    opset: int = 17
    atol: float = 2e-5


def node(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs or ["y"], **attrs)


def one(op: str, x_shape=(1, 4, 6, 6), inits=None, extra=(), opset=17, outputs=(("y", F),), **attrs) -> Case:
    inits = inits or {}
    return Case(f"{op}-{'-'.join(f'{k}={v}' for k, v in attrs.items())}"[:60],
                [node(op, ["x", *inits, *extra], [o for o, _ in outputs], **attrs)],
                {"x": rand(*x_shape)}, inits, outputs, opset)


W = rand(6, 4, 3, 3)
WG = rand(6, 2, 3, 3)
WT = rand(4, 3, 3, 3)
CASES = [
    one("Conv", inits={"w": W, "b": rand(6)}, pads=[1, 0, 2, 1]),
    one("Conv", inits={"w": WG}, strides=[2, 2], dilations=[2, 1], group=2, pads=[2, 1, 2, 1]),
    one("Conv", inits={"w": rand(4, 1, 3, 3)}, group=4, auto_pad="SAME_UPPER", strides=[2, 2]),
    one("Conv", inits={"w": rand(6, 4, 2, 2)}, auto_pad="SAME_LOWER", x_shape=(1, 4, 5, 5)),
    one("Conv", inits={"w": rand(6, 4, 3), "b": rand(6)}, x_shape=(1, 4, 9), pads=[1, 1]),
    one("ConvTranspose", inits={"w": WT, "b": rand(3)}, strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    one("ConvTranspose", inits={"w": rand(4, 2, 3, 3)}, group=2, strides=[2, 1], pads=[0, 1, 1, 0]),
    one("ConvTranspose", inits={"w": WT, "b": rand(3)}, strides=[2, 2], output_padding=[1, 1]),
    one("ConvTranspose", inits={"w": WT}, strides=[2, 2], auto_pad="SAME_UPPER"),
    one("ConvTranspose", inits={"w": WT}, strides=[2, 2], output_shape=[12, 12], dilations=[1, 1]),
    Case("Conv-runtime-bias", [node("Conv", ["x", "w", "b"], pads=[1, 1, 1, 1])], {"x": rand(1, 4, 6, 6), "b": rand(6)},
         {"w": W}),
    one("Gemm", x_shape=(3, 5), inits={"w": rand(4, 5), "c": rand(4)}, transB=1),
    Case("Gemm-runtime-B", [node("Gemm", ["a", "b", "c"], transB=1, alpha=2.0)], {"a": rand(3, 5), "b": rand(4, 5)},
         {"c": rand(4)}),
    one("Gemm", x_shape=(5, 3), inits={"w": rand(5, 4), "c": rand(3, 4)}, transA=1, alpha=0.5, beta=2.0),
    one("MatMul", x_shape=(2, 3, 5), inits={"w": rand(5, 4)}),
    Case("MatMul-4d-batched", [node("MatMul", ["a", "b"])], {"a": rand(1, 2, 3, 5), "b": rand(1, 2, 5, 4)}),
    Case("MatMul-broadcast", [node("MatMul", ["a", "b"])], {"a": rand(2, 3, 5), "b": rand(5, 4)}),
    *(one(op, inits={"c": rand(4, 1, 1, positive=True)}) for op in ("Add", "Sub", "Mul", "Div")),
    Case("Add-var-broadcast", [node("Add", ["a", "b"])], {"a": rand(2, 1, 4), "b": rand(3, 1)}),
    *(one(op) for op in ("Relu", "Sigmoid", "Tanh", "Erf", "Abs", "Neg", "Exp", "Softsign", "Softplus",
                          "HardSwish", "Floor", "Identity")),
    *(Case(op, [node("Abs", ["x"], ["a"]), node(op, ["a"])], {"x": rand(2, 5, positive=True)})
      for op in ("Sqrt", "Log", "Reciprocal")),
    one("HardSigmoid", alpha=0.3, beta=0.4),
    one("LeakyRelu", alpha=0.2),
    one("Elu", alpha=0.7),
    one("PRelu", inits={"slope": rand(4, 1, 1)}),
    one("Clip", inits={"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}),
    one("Clip", inits={"lo": np.array(0.0, np.float32)}),
    Case("Clip-max-only", [node("Clip", ["x", "", "hi"])], {"x": rand(2, 5)}, {"hi": np.array(0.3, np.float32)}),
    one("Gelu", opset=20),
    one("Gelu", opset=20, approximate="tanh"),
    Case("Silu-pattern", [node("Sigmoid", ["x"], ["s"]), node("Mul", ["x", "s"])], {"x": rand(1, 4, 6, 6)}),
    Case("Gelu-erf-pattern", [node("Div", ["x", "r2"], ["d"]), node("Erf", ["d"], ["e"]),
                              node("Add", ["e", "one"], ["a"]), node("Mul", ["x", "a"], ["m"]),
                              node("Mul", ["m", "half"])],
         {"x": rand(2, 8)}, {"r2": np.array(1.4142135, np.float32), "one": np.array(1.0, np.float32),
                             "half": np.array(0.5, np.float32)}),
    one("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    one("MaxPool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, x_shape=(1, 2, 7, 7)),
    one("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0], ceil_mode=1, x_shape=(1, 2, 8, 8)),
    one("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    one("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    one("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1,
        x_shape=(1, 2, 8, 8)),
    one("AveragePool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, x_shape=(1, 2, 7, 7)),
    one("AveragePool", kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
    one("GlobalAveragePool"),
    one("DepthToSpace", x_shape=(1, 8, 3, 2), blocksize=2, mode="DCR"),
    one("DepthToSpace", x_shape=(1, 8, 3, 2), blocksize=2, mode="CRD"),
    one("GlobalMaxPool"),
    one("ReduceMean", axes=[1, -1], keepdims=0),
    one("ReduceMean", inits={"axes": i64(2, 3)}, opset=18),
    one("ReduceSum", inits={"axes": i64(1)}, opset=13),
    one("ReduceMax", axes=[2]),
    one("ArgMax", axis=1, keepdims=0, outputs=(("y", TensorProto.INT64),)),
    one("Softmax", axis=1, opset=13),
    one("Softmax", axis=1, opset=11),
    one("LogSoftmax"),
    one("LayerNormalization", inits={"g": rand(6), "b": rand(6)}, epsilon=1e-3),
    one("LayerNormalization", inits={"g": rand(6, 6)}, axis=-2),
    one("BatchNormalization", inits={"g": rand(4), "b": rand(4), "m": rand(4), "v": rand(4, positive=True)}),
    one("InstanceNormalization", inits={"g": rand(4), "b": rand(4)}),
    one("Concat", inits={"c": rand(1, 2, 6, 6)}, axis=1),
    Case("Split-sizes", [node("Split", ["x", "s"], ["a", "b"], axis=-1)], {"x": rand(2, 7)},
         {"s": i64(3, 4)}, (("a", F), ("b", F)), opset=13),
    Case("Split-num-outputs", [node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)], {"x": rand(2, 7)},
         {}, (("a", F), ("b", F), ("c", F)), opset=18),
    one("Slice", inits={"s": i64(1, -1), "e": i64(2**62, -5), "a": i64(1, 3), "t": i64(2, -1)}),
    one("Slice", inits={"s": i64(-2), "e": i64(-(2**62)), "a": i64(2), "t": i64(-1)}),
    one("Reshape", inits={"s": i64(0, -1, 3)}),
    one("Flatten", axis=2),
    one("Transpose", perm=[0, 2, 3, 1]),
    one("Transpose"),
    one("Squeeze", x_shape=(1, 4, 1, 3), inits={"a": i64(-2)}),
    one("Squeeze", x_shape=(1, 4, 1, 3)),
    one("Unsqueeze", x_shape=(4, 3), inits={"a": i64(0, -1)}),
    one("Tile", x_shape=(2, 3), inits={"r": i64(2, 1)}),
    one("Expand", x_shape=(3, 1), inits={"s": i64(2, 3, 4)}),
    one("Pad", inits={"p": i64(0, 0, 1, 2, 0, 0, 3, 0), "v": np.array(1.5, np.float32)}),
    one("Pad", inits={"p": i64(0, 0, 1, 2, 0, 0, 2, 1)}, mode="reflect"),
    one("Pad", inits={"p": i64(0, 0, 1, 2, 0, 0, 2, 1)}, mode="edge"),
    Case("Pad-axes", [node("Pad", ["x", "p", "", "a"], mode="constant")], {"x": rand(1, 2, 4, 4)},
         {"p": i64(1, 0, 2, 3), "a": i64(-1, 1)}, opset=18),
    one("Resize", inits={"roi": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 3], np.float32)},
        mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    one("Resize", inits={"roi": np.zeros(0, np.float32), "s": np.zeros(0, np.float32), "z": i64(1, 4, 12, 12)},
        mode="nearest"),
    one("Resize", inits={"roi": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 2], np.float32)}, mode="linear"),
    one("Resize", inits={"roi": np.zeros(0, np.float32), "s": np.zeros(0, np.float32), "z": i64(1, 4, 9, 14)},
        mode="linear", coordinate_transformation_mode="align_corners"),
    one("Resize", inits={"roi": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 2], np.float32)}, mode="linear",
        coordinate_transformation_mode="asymmetric"),
    one("Resize", inits={"roi": np.zeros(0, np.float32), "s": np.array([1, 1, 0.5, 0.5], np.float32)},
        mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    Case("Gather-embedding", [node("Gather", ["table", "ids"])], {"ids": i64(0, 3, 3, 9).reshape(1, 4)},
         {"table": rand(10, 6)}),
    one("Gather", inits={"i": i64(2, -1, 0)}, axis=1),
    one("Gather", inits={"i": np.array(1, np.int64)}, axis=3),
    Case("Where-Equal-Cast", [node("Equal", ["x", "c"], ["e"]), node("Cast", ["e"], ["f"], to=F),
                              node("Where", ["e", "x", "f"], ["y"])],
         {"x": np.array([[1, 2, 3], [3, 2, 1]], np.float32)}, {"c": np.array([2.0], np.float32)}),
    Case("Pow-Sqrt", [node("Pow", ["x", "two"], ["p"]), node("Sqrt", ["p"])], {"x": rand(2, 5)},
         {"two": np.array(2.0, np.float32)}),
    Case("Max-Min", [node("Max", ["a", "b"], ["m"]), node("Min", ["m", "c"])], {"a": rand(3, 4), "b": rand(3, 4)},
         {"c": np.array(0.2, np.float32)}),
    Case("Shape-subgraph-Reshape", [
        node("Shape", ["x"], ["s"]), node("Gather", ["s", "zero"], ["n"], axis=0),
        node("Unsqueeze", ["n", "ax"], ["nu"]), node("Concat", ["nu", "minus1"], ["shape"], axis=0),
        node("Reshape", ["x", "shape"])],
        {"x": rand(1, 4, 3, 3)}, {"zero": np.array(0, np.int64), "ax": i64(0), "minus1": i64(-1)}),
    Case("ConstantOfShape-Range", [
        node("Shape", ["x"], ["s"]), node("ConstantOfShape", ["s"], ["ones"],
                                          value=numpy_helper.from_array(np.array([1.0], np.float32))),
        node("Range", ["st", "lim", "dl"], ["r"]), node("Cast", ["r"], ["rf"], to=F),
        node("Add", ["x", "ones"], ["a"]), node("Mul", ["a", "rf"])],
        {"x": rand(2, 5)}, {"st": np.array(0, np.int64), "lim": np.array(5, np.int64), "dl": np.array(1, np.int64)}),
    Case("int64-input-arith", [node("Cast", ["ids"], ["f"], to=F), node("Mul", ["f", "x"])],
         {"ids": i64(1, 2, 3), "x": rand(3)}),
]


def _model(case: Case) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in case.inputs.items()]
    outputs = [helper.make_tensor_value_info(name, dtype, None) for name, dtype in case.outputs]
    inits = [numpy_helper.from_array(v, k) for k, v in case.inits.items()]
    graph = helper.make_graph(case.nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)], ir_version=9)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_matches_onnxruntime(case: Case, tmp_path):
    proto = _model(case)
    expected = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, case.inputs)
    target = dataclasses.replace(TARGETS["coreml-fp32"], options={"compute": "fp32", "check": False})
    backend = CoreMLBackend()
    artifact = backend.lower(QModel(ir.serde.deserialize_model(proto)), target, tmp_path)
    got = backend.runner(artifact.path).run(case.inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=case.atol)
