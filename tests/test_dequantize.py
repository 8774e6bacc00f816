"""Pre-quantized models (onnxruntime dynamic quantization, QDQ exports) back to float, then onto every target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from irq.frontends import import_model
from irq.pipeline.infra import PassManager
from irq.pipeline.registry import parse_pipeline

QUANTIZED_OPS = {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM", "QuantizeLinear",
                 "DequantizeLinear"}


def _float_model() -> onnx.ModelProto:
    """Conv -> ReLU -> MatMul + bias -> LSTM: every op onnxruntime's dynamic quantization rewrites."""
    rng = np.random.default_rng(0)
    inits = [nh.from_array(a.astype(np.float32), n) for n, a in [
        ("W", rng.normal(0, .3, (8, 3, 3, 3))), ("B", rng.normal(0, .1, 8)), ("M", rng.normal(0, .1, (288, 10))),
        ("C", rng.normal(0, .1, 10)), ("LW", rng.normal(0, .3, (1, 16, 10))), ("LR", rng.normal(0, .3, (1, 16, 4)))]]
    inits.append(nh.from_array(np.array([0], np.int64), "axes"))
    nodes = [h.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
             h.make_node("Flatten", ["r"], ["f"]), h.make_node("MatMul", ["f", "M"], ["m"]),
             h.make_node("Add", ["m", "C"], ["y"]), h.make_node("Unsqueeze", ["y", "axes"], ["s"]),
             h.make_node("LSTM", ["s", "LW", "LR"], ["seq", "state"], hidden_size=4)]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10]),
                          h.make_tensor_value_info("state", TensorProto.FLOAT, [1, 1, 4])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The float model and onnxruntime's dynamic (per-tensor, per-channel) and static QDQ quantizations of it."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    d = tmp_path_factory.mktemp("prequantized")
    paths = {name: d / f"{name}.onnx" for name in ("float", "dynamic", "dynamic-pc", "qdq")}
    onnx.save(_float_model(), paths["float"])
    # uint8 weights: onnxruntime's CPU ConvInteger has no int8-weight kernel
    quantize_dynamic(paths["float"], paths["dynamic"], weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["Conv", "MatMul", "LSTM"])
    quantize_dynamic(paths["float"], paths["dynamic-pc"], weight_type=QuantType.QUInt8, per_channel=True,
                     op_types_to_quantize=["Conv", "MatMul"])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({"x": x} for x in _inputs(16))

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    quantize_static(paths["float"], paths["qdq"], Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    op_types_to_quantize=["Conv", "MatMul"])
    return paths


def _inputs(n: int) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (n, 1, 3, 6, 6)).astype(np.float32)


def _run(model: bytes, xs: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    runs = [session.run(None, {"x": x}) for x in xs]
    return [np.concatenate([r[i] for r in runs]) for i in range(len(runs[0]))]


@pytest.mark.parametrize("kind", ["dynamic", "dynamic-pc", "qdq"])
def test_dequantize_gives_the_float_ops_with_the_quantized_weights(models, kind):
    """No quantized op is left; the result answers like the quantized model, and like float within its error."""
    qmodel = import_model(models[kind])
    result = PassManager(parse_pipeline("dequantize"))(qmodel.clone())
    proto = result.model.to_proto()
    onnx.checker.check_model(proto, full_check=True)
    assert result.modified and not QUANTIZED_OPS & {n.op_type for n in proto.graph.node}
    assert not result.model.analysis.passes["dequantize"]["kept"]
    xs = _inputs(32)
    floats, quantized, dequantized = (_run(m, xs) for m in (models["float"].read_bytes(), qmodel.to_bytes(),
                                                            proto.SerializeToString()))
    for f, q, d in zip(floats, quantized, dequantized, strict=True):
        scale = np.abs(f).max()
        # the weights keep their integer grid; only activation rounding is gone, so the
        # dequantized model is closer to float than the shipped quantized one
        assert np.abs(d - f).mean() < np.abs(q - f).mean()
        assert np.abs(d - q).max() < 0.05 * scale


def test_a_dynamic_int8_model_compiles_for_the_mobile_targets(models, tmp_path):
    """The model's shipped DynamicQuantizeLinear/ConvInteger used to stop tflite-int8 and coreml-int8 outright."""
    import irq
    from irq.data import DataSet

    xs = DataSet({"x": _inputs(16)[:, 0]})
    for target in ("onnx-fp16", "tflite-int8", "coreml-int8"):
        report = irq.compile(models["dynamic"], target, tmp_path / target, calib=xs, eval=xs, measure_latency=False)
        did = next(p["did"] for p in report["passes"] if p["name"] == "dequantize")
        assert len(did["dequantized"]) == 3 and not did["kept"], target
        for name, figures in report["error"]["per_output"].items():
            assert figures["cosine"] > 0.99, (target, name, figures)


def test_static_int8_keeps_a_recurrent_layer_s_weights_int8(models, tmp_path):
    """onnx-int8 of a model shipped dynamic-int8: no static LSTM kernel exists, so its W and R stay int8 (float
    math): before, they went back to float32 and ddddocr's recogniser came out 1.9x the file the user gave."""
    import irq
    from irq.data import DataSet

    xs = DataSet({"x": _inputs(16)[:, 0]})
    report = irq.compile(models["dynamic"], "onnx-int8", tmp_path, calib=xs, eval=xs, measure_latency=False)
    artifact = onnx.load(report["artifact"])
    producers = {o: n for n in artifact.graph.node for o in n.output}
    lstm = next(n for n in artifact.graph.node if n.op_type == "LSTM")
    for weight in lstm.input[1:3]:
        reshape = producers[weight]
        assert reshape.op_type == "Reshape" and producers[reshape.input[0]].op_type == "DequantizeLinear"
    big_floats = [i.name for i in artifact.graph.initializer if i.data_type == onnx.TensorProto.FLOAT
                  and np.prod(i.dims) > 32]
    assert not big_floats
    assert report["error"]["per_output"]["state"]["cosine"] > 0.99
