"""Each pass on small graphs: what it changed, and that numbers still agree with onnxruntime."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from conftest import run_onnx

from irq.data import DataSet
from irq.frontends.onnx_file import from_proto
from irq.pipeline.infra import PassManager
from irq.pipeline.prepare import quantize
from irq.pipeline.recipe import recipe_from_dict
from irq.pipeline.registry import parse_pipeline
from irq.pipeline.targets import get_target
from irq.quant.spec import Precision, QType


def _ops(qmodel) -> list[str]:
    return [n.op_type for n in qmodel.graph]


def _x(n=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, 16, 16)).astype(np.float32)


def test_fold_bn_removes_batchnorm_and_keeps_numbers(tiny_cnn_proto):
    # torch's exporter folds BN already; build an unfolded graph by hand to test the pass.
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in [
        (w, "w"), (rng.normal(size=4), "b"), (rng.uniform(0.5, 2, 4), "g"), (rng.normal(size=4), "beta"),
        (rng.normal(size=4), "mean"), (rng.uniform(0.5, 2, 4), "var")]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["y"], name="bn")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, [1, 4, 8, 8])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = _x(1)[:, :, :8, :8]
    q = PassManager(parse_pipeline("fold-bn"))(from_proto(proto, "bn")).model
    assert _ops(q) == ["Conv"] and q.analysis.of("fold-bn") == {"folded": 1}
    assert q.graph.outputs[0].name == "y"
    np.testing.assert_allclose(run_onnx(q.to_proto(), {"x": x})[0], run_onnx(proto, {"x": x})[0], atol=1e-4)


def test_static_int8_structure_and_accuracy(tiny_cnn_proto):
    q = quantize(from_proto(tiny_cnn_proto, "tiny"), get_target("onnx-int8"), DataSet({"input": _x(64)}))
    ops = _ops(q)
    # ReLU/ReLU6 after a quantized conv are folded into the conv's output quantizer.
    assert "Relu" not in ops and "Clip" not in ops
    weights = {n.inputs[0].name: n.inputs[0].const_value.numpy() for n in q.graph
               if n.op_type == "DequantizeLinear" and n.inputs[0].const_value is not None}
    int8 = [a for a in weights.values() if a.dtype == np.int8]
    int32 = [a for a in weights.values() if a.dtype == np.int32]
    assert len(int8) == 4 and len(int32) == 4  # 3 convs + 1 gemm: int8 weights, int32 biases
    per_channel = [n for n in q.graph if n.op_type == "DequantizeLinear" and n.attributes.get_int("axis", 1) == 0
                   and n.inputs[1].const_value is not None and n.inputs[1].const_value.size > 1]
    assert len(per_channel) >= 3
    acts = [n for n in q.graph if n.op_type == "QuantizeLinear"]
    assert acts and all(n.inputs[2].const_value.dtype == 2 for n in acts)  # uint8 zero points (x86)
    x = _x(16, seed=5)
    ref = run_onnx(tiny_cnn_proto, {"input": x})[0]
    out = run_onnx(q.to_proto(), {"input": x})[0]
    cos = np.sum(ref * out, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
    assert cos.min() > 0.99


def test_arm_target_uses_int8_activations(tiny_cnn_proto):
    q = quantize(from_proto(tiny_cnn_proto, "tiny"), get_target("onnx-int8-arm"), DataSet({"input": _x(32)}))
    zps = [n.inputs[2].const_value.numpy() for n in q.graph if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == np.int8 for z in zps)


def test_recipe_keeps_a_layer_float(tiny_cnn_proto):
    recipe = recipe_from_dict({"layers": [{"op_type": "Gemm", "precision": "skip"}]})
    q = quantize(from_proto(tiny_cnn_proto, "tiny"), get_target("onnx-int8"), DataSet({"input": _x(32)}), recipe)
    gemm = next(n for n in q.graph if n.op_type == "Gemm")
    assert gemm.inputs[1].producer() is None  # float weight, no DequantizeLinear
    assert q.plan[gemm.name].precision == Precision.FP32 and q.plan[gemm.name].reason.startswith("recipe")


def test_calibration_methods_clip_outliers(tiny_cnn_proto):
    x = _x(64)
    x[0, 0, 0, 0] = 60.0  # one extreme outlier in the input
    ranges = {}
    for method in ("minmax", "percentile", "mse", "entropy"):
        p = parse_pipeline(f"calibrate{{method={method}}}")
        q = from_proto(tiny_cnn_proto, "tiny")
        q.calibration = DataSet({"input": x})
        ranges[method] = PassManager(p)(q).model.ranges["input"]
    assert ranges["minmax"].hi == pytest.approx(60.0)
    for method in ("percentile", "entropy"):
        assert ranges[method].hi < 20.0, method
    for method in ("percentile", "mse", "entropy"):
        assert ranges[method].lo < -2.0, method  # the real body of the distribution is kept
        assert ranges[method].hi <= ranges["minmax"].hi


def test_mse_range_clips_a_heavy_tail_but_not_a_bounded_one():
    from irq.quant.ranges import mse_range

    rng = np.random.default_rng(0)
    for data, clipped in ((rng.laplace(0, 1, 400_000), True), (rng.uniform(-3, 3, 400_000), False)):
        hist, edges = np.histogram(data, bins=2048)
        lo, hi = mse_range(hist, edges, 8)
        assert (hi < 0.9 * data.max()) == clipped
        assert (lo > 0.9 * data.min()) == clipped


def test_dynamic_quantization_of_matmul_gather_and_lstm():
    import torch

    from irq.frontends.torch_module import export_torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = torch.nn.Embedding(600, 128), torch.nn.Linear(128, 64)
            self.rnn = torch.nn.LSTM(64, 32, batch_first=True)

        def forward(self, ids):
            out, _ = self.rnn(torch.relu(self.fc(self.emb(ids))))
            return out.mean(1)

    torch.manual_seed(0)
    proto = export_torch(Net().eval(), torch.randint(0, 600, (1, 10)))
    q = quantize(from_proto(proto, "rnn"), get_target("onnx-dynamic"))
    assert q.analysis.of("quantize-dynamic")["rewritten"] == {"matmul": 1, "recurrent": 1, "gather": 1}
    assert "MatMulInteger" in _ops(q) and "DynamicQuantizeLinear" in _ops(q)
    ids = np.random.default_rng(0).integers(0, 600, (8, 10))
    ref, out = run_onnx(proto, {"input": ids})[0], run_onnx(q.to_proto(), {"input": ids})[0]
    assert np.abs(ref - out).max() < 0.02 * np.abs(ref).max()
    assert len(q.to_bytes()) < 0.4 * proto.ByteSize()


def test_fp16_keeps_float32_io(tiny_cnn_proto):
    q = quantize(from_proto(tiny_cnn_proto, "tiny"), get_target("onnx-fp16"))
    proto = q.to_proto()
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    x = _x(4)
    np.testing.assert_allclose(run_onnx(proto, {"input": x})[0], run_onnx(tiny_cnn_proto, {"input": x})[0],
                               atol=5e-3, rtol=5e-3)


def test_int4_matmul_nbits_matches_reference():
    from onnx import helper, numpy_helper

    from irq.passes.int4_weights import dequantize_int4_blocks, quantize_int4_blocks

    rng = np.random.default_rng(3)
    w = rng.normal(size=(80, 24)).astype(np.float32)  # K not a multiple of the block: padding path
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", 1, [None, 80])],
                              [helper.make_tensor_value_info("y", 1, [None, 24])], [numpy_helper.from_array(w, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    q = quantize(from_proto(proto, "mm"), get_target("onnx-int4"))
    assert _ops(q) == ["MatMulNBits"]
    x = rng.normal(size=(5, 80)).astype(np.float32)
    qw, scales = quantize_int4_blocks(w, 32)
    expected = x @ dequantize_int4_blocks(qw, scales, 80)
    np.testing.assert_allclose(run_onnx(q.to_proto(), {"x": x})[0], expected, rtol=1e-4, atol=1e-4)
    assert QType.INT4.qmin <= qw.min() and qw.max() <= QType.INT4.qmax


def test_insert_qdq_requires_ranges(tiny_cnn_proto):
    from irq.errors import PassError

    q = from_proto(tiny_cnn_proto, "tiny")
    q.default_precision = Precision.INT8
    with pytest.raises(PassError, match="has no calibrated range"):
        PassManager(parse_pipeline("plan-precision,insert-qdq"))(q)


def test_analyze_finds_layers_and_hazards(tiny_cnn_proto):
    from irq.api import audit

    report = audit(tiny_cnn_proto)
    assert len(report["quantizable_layers"]) == 4
    assert report["first_layers"] == [report["quantizable_layers"][0]["name"]]
    assert report["last_layers"] == [report["quantizable_layers"][-1]["name"]]
    assert report["parameters"] > 1000


def test_fp16_handles_integer_casts_and_clamps():
    """A mask cast from int64 and F.normalize's clamp (as in MiniLM) must load in onnxruntime."""
    import torch

    from irq.frontends.torch_module import export_torch

    class Pool(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(50, 16)

        def forward(self, ids, mask):
            h = self.emb(ids) * mask.unsqueeze(-1).float()
            return torch.nn.functional.normalize(h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1), dim=-1)

    ids, mask = torch.randint(0, 50, (2, 7)), torch.ones(2, 7, dtype=torch.int64)
    proto = export_torch(Pool().eval(), (ids, mask), input_names=["ids", "mask"])
    q = quantize(from_proto(proto, "pool"), get_target("onnx-fp16"))
    feeds = {"ids": ids.numpy(), "mask": mask.numpy()}
    np.testing.assert_allclose(run_onnx(q.to_proto(), feeds)[0], run_onnx(proto, feeds)[0], atol=2e-3)


def test_bias_correction_removes_the_mean_shift_of_rounded_weights(tiny_cnn_proto):
    """Per channel, the int8 model's mean output error shrinks; a layer kept float keeps its own bias."""
    from irq.frontends.onnx_file import from_proto as load
    from irq.quant.spec import LayerDecision

    calib = DataSet({"input": _x(64, seed=1)})
    x = _x(64, seed=2)
    want = run_onnx(tiny_cnn_proto, {"input": x})[0]
    plain = quantize(load(tiny_cnn_proto, "t"), get_target("onnx-int8"), calib,
                     pipeline=get_target("onnx-int8").pipeline.replace("bias-correct,", ""))
    corrected = quantize(load(tiny_cnn_proto, "t"), get_target("onnx-int8"), calib)
    assert "bias-correct" in corrected.history and corrected.analysis.of("bias-correct")["layers"] == 4
    shift = [np.abs((run_onnx(q.to_proto(), {"input": x})[0] - want).mean(axis=0)).mean() for q in (plain, corrected)]
    assert shift[1] < 0.7 * shift[0], shift

    base = PassManager(parse_pipeline("shape-inference,fold-constants,cleanup,fold-bn,analyze,calibrate,"
                                      "plan-precision,bias-correct"))(
        dataclasses.replace(load(tiny_cnn_proto, "t"), calibration=calib)).model
    first = next(n for n in base.graph if n.op_type == "Conv")
    label, bias = first.name, first.inputs[2].const_value.numpy().copy()
    base.plan[label] = LayerDecision(Precision.FP32, "kept", source=None)
    done = PassManager(parse_pipeline("insert-qdq"))(base).model
    node = next(n for n in done.graph if n.name == label)
    assert np.array_equal(node.inputs[2].const_value.numpy(), bias)  # float layer: untouched bias


def test_bias_correction_without_calibration_data_says_so(tiny_cnn_proto):
    """coreml-int8 needs no calibration data: with none, bias-correct measures nothing and the IR says why."""
    q = quantize(from_proto(tiny_cnn_proto, "t"), get_target("coreml-int8"))
    assert q.analysis.of("bias-correct") == {"layers": 0, "skipped": "no calibration data"} and not q.bias_shifts
