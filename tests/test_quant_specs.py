"""Quantization specs validate themselves; the arithmetic matches ONNX's Q/DQ semantics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from irq.quant.arith import activation_spec, dequantize, quantize, quantize_bias, quantize_weight
from irq.quant.spec import LayerDecision, Precision, QType, QuantSpec, Scheme, TensorRange


@pytest.mark.parametrize("kwargs, message", [
    ({"qtype": QType.INT8, "scale": (0.0,), "zero_point": (0,)}, "finite and > 0"),
    ({"qtype": QType.INT8, "scale": (1.0,), "zero_point": (200,)}, "zero point outside"),
    ({"qtype": QType.UINT8, "scale": (1.0, 2.0), "zero_point": (0, 0)}, "per-tensor spec has exactly one"),
    ({"qtype": QType.INT8, "scale": (1.0,), "zero_point": (0, 0), "axis": 0}, "1 scales but 2 zero points"),
])
def test_quant_spec_rejects_impossible_specs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantSpec(**kwargs)


def test_spec_axis_check_and_other_specs():
    spec = QuantSpec(QType.INT8, (1.0, 2.0), (0, 0), axis=3)
    with pytest.raises(ValueError, match="axis 3 out of range"):
        spec.check_axis(2)
    with pytest.raises(ValueError, match="exceeds high"):
        TensorRange(2.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        TensorRange(float("-inf"), 1.0)
    with pytest.raises(ValueError, match="power of two"):
        Scheme(int4_block_size=24)
    with pytest.raises(ValueError, match="granularity"):
        LayerDecision(Precision.INT8, granularity="per-row")
    assert (QType.INT8.qmin, QType.INT8.qmax, QType.UINT8.qmax, QType.INT4.qmin) == (-128, 127, 255, -8)


def test_quantize_matches_onnxruntime_q_dq():
    from conftest import run_onnx

    rng = np.random.default_rng(1)
    x = (rng.normal(size=(64,)) * 3).astype(np.float32)
    spec = activation_spec(TensorRange(-2.5, 4.0), QType.UINT8)
    node_q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    node_dq = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])
    graph = helper.make_graph(
        [node_q, node_dq], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64])],
        [helper.make_tensor_value_info("q", onnx.TensorProto.UINT8, [64]),
         helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64])],
        [helper.make_tensor("s", onnx.TensorProto.FLOAT, [], [spec.scale[0]]),
         helper.make_tensor("z", onnx.TensorProto.UINT8, [], [spec.zero_point[0]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    q_ref, y_ref = run_onnx(model, {"x": x})
    q = quantize(x, np.float32(spec.scale[0]), np.int64(spec.zero_point[0]), QType.UINT8)
    assert np.array_equal(q, q_ref)
    assert np.array_equal(dequantize(q, spec.scale[0], spec.zero_point[0]), y_ref)


def test_weight_and_bias_quantization():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32) * np.array([1, 10, 0.1, 0], np.float32)[:, None, None, None]
    q, s = quantize_weight(w, 0)
    assert q.dtype == np.int8 and s.shape == (4,)
    assert np.abs(q).max() <= 127 and s[3] == 1.0  # an all-zero channel gets a valid scale
    err = np.abs(dequantize(q, s, np.zeros(4), 0) - w).max(axis=(1, 2, 3))
    assert np.all(err <= s / 2 + 1e-7)
    b_q, b_s = quantize_bias(np.array([0.5, -1.0, 2.0, 0.0]), 0.02, s)
    assert b_q.dtype == np.int32 and np.allclose(b_q * b_s, [0.5, -1.0, 2.0, 0.0], atol=b_s.max())


def test_growing_histogram_counts_like_one_big_histogram():
    from irq.quant.histogram import BINS, GrowingHistogram

    rng = np.random.default_rng(4)
    batches = [rng.normal(size=5000) * s for s in (0.5, 1.0, 8.0, 3.0)]  # the range grows twice or more
    h = GrowingHistogram()
    for b in batches:
        h.update(b.astype(np.float32))
    data = np.concatenate(batches)
    assert (h.lo, h.hi) == (pytest.approx(data.min()), pytest.approx(data.max()))
    assert h.counts.sum() == data.size
    expected = np.histogram(data, bins=BINS, range=(-h.bound, h.bound))[0]
    # Merged bins of earlier batches are exact; only bin-edge rounding may move a few values.
    assert np.abs(np.cumsum(h.counts) - np.cumsum(expected)).max() <= 4
    counts, edges = h.trimmed()
    assert counts.sum() == data.size and edges[0] == h.lo and edges[-1] == h.hi
    h.update(np.array([np.inf, 1.0], np.float32))
    assert h.nonfinite == 1


def test_layer_decisions_carry_typed_granularity_and_source():
    from irq.quant.spec import DecisionSource, Granularity

    d = LayerDecision(Precision.INT8, granularity="per-tensor")
    assert d.granularity is Granularity.PER_TENSOR and not d.per_channel and d.source is DecisionSource.DEFAULT
    assert LayerDecision(Precision.FP32, "kept by hand").source is DecisionSource.PINNED
    assert LayerDecision(Precision.FP32, "x", source=DecisionSource.RECIPE).source is DecisionSource.RECIPE


def test_in_graph_range_probe_gives_exact_extremes_and_an_odd_strided_sample():
    import onnx
    from onnx import TensorProto, helper

    from irq.ir.ort import make_session
    from irq.quant.probes import add_range_probe

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 300, 300])],
                              [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    del model.graph.output[:]
    names = add_range_probe(model, "x", "p", sample=1 << 17)
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).normal(size=(4, 3, 300, 300)).astype(np.float32)  # 1.08 M values: stride 9
    lo, hi, sample = make_session(model.SerializeToString()).run(names, {"x": x})
    flat = x.reshape(-1)
    assert (float(lo), float(hi)) == (flat.min(), flat.max())
    np.testing.assert_array_equal(sample, flat[::(flat.size // (1 << 17)) | 1])  # as GrowingHistogram.update samples


def test_calibrate_minmax_ranges_are_the_data_extremes(fashion_model):
    import dataclasses

    from irq.frontends import import_model
    from irq.pipeline.infra import PassManager
    from irq.pipeline.registry import parse_pipeline
    from irq.zoo import calibration_data

    data = calibration_data("fashion-cnn", 40)
    q = dataclasses.replace(import_model(fashion_model), calibration=data)
    q = PassManager(parse_pipeline("calibrate{method=minmax,batch-size=16}"))(q).model
    name = q.graph.inputs[0].name
    x = np.asarray(data.inputs[name])
    assert (q.ranges[name].lo, q.ranges[name].hi) == (float(x.min()), float(x.max()))
