"""Accuracy passes beyond round-to-nearest: equalization, weight-scale search, presets, int4 weights."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from conftest import run_onnx

import irq
from irq import zoo
from irq.cli import main
from irq.errors import InputError
from irq.frontends import import_model
from irq.pipeline.infra import PassManager
from irq.pipeline.presets import with_preset, with_weights
from irq.pipeline.registry import parse_pipeline
from irq.pipeline.targets import get_target
from irq.quant.spec import QType
from irq.verify.checks import VerifyOptions

CLEAN = "shape-inference,fold-constants,cleanup,fold-bn"
CHECKS = VerifyOptions(measure_latency=False, crash_test=False, layer_error=False)


def test_equalize_keeps_the_function_and_says_which_pairs_it_took(fashion_model):
    q = PassManager(parse_pipeline(CLEAN))(import_model(fashion_model)).model
    before = q.to_proto()
    result = PassManager(parse_pipeline("equalize"))(q)
    record = result.model.analysis.of("equalize")
    assert result.modified and len(record["pairs"]) == 4  # conv-conv-conv-gemm-gemm, through ReLU and pooling
    assert record["skipped"] == {"its output is read by several nodes or is a model output": 1}  # the logits
    x = zoo.calibration_data("fashion-cnn", 16).feed(0, 16)
    ref, out = run_onnx(before, x)[0], run_onnx(result.model.to_proto(), x)[0]
    np.testing.assert_allclose(out, ref, atol=1e-4 * np.abs(ref).max())
    spread = [_channel_spread(m, 0) for m in (before, result.model.to_proto())]  # the first conv: 11.9x -> 4.3x
    assert spread[1] < spread[0] / 2, spread


def _channel_spread(model: onnx.ModelProto, index: int) -> float:
    """max / min over output channels of the max |w| of the index-th Conv's weight."""
    conv = [n for n in model.graph.node if n.op_type == "Conv"][index]
    w = next(onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name == conv.input[1])
    r = np.abs(w).max(axis=(1, 2, 3))
    return float(r.max() / r.min())


def test_equalize_by_activations_keeps_the_function_and_evens_the_tensor_between(fashion_model):
    calib = zoo.calibration_data("fashion-cnn", 32)
    q = PassManager(parse_pipeline(CLEAN))(import_model(fashion_model)).model
    before = q.to_proto()
    q = dataclasses.replace(q, calibration=calib)
    result = PassManager(parse_pipeline("equalize{by=activations}"))(q)
    assert result.modified and result.model.analysis.of("equalize")["by"] == "activations"
    x = calib.feed(0, 16)
    ref, out = run_onnx(before, x)[0], run_onnx(result.model.to_proto(), x)[0]
    np.testing.assert_allclose(out, ref, atol=1e-4 * np.abs(ref).max())  # chains of pairs rescale one layer twice
    between = [n for n in before.graph.node if n.op_type == "Conv"][1].input[0]  # what the second conv reads
    spread = [_activation_spread(m, between, x) for m in (before, result.model.to_proto())]
    assert spread[1] < spread[0] / 2, spread


def _activation_spread(model: onnx.ModelProto, name: str, feed: dict) -> float:
    """max / min over channels of the max |x| of tensor ``name`` (channels on axis 1)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name=name))
    a = run_onnx(probe, feed)[-1]
    r = np.abs(a).max(axis=tuple(i for i in range(a.ndim) if i != 1))
    return float(r.max() / max(r.min(), 1e-12))


def test_equalize_gives_a_shared_bias_a_copy_per_layer():
    from onnx import TensorProto, helper, numpy_helper

    from irq.data import DataSet

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((4, 4, 3, 3)) * np.array([0.1, 1, 5, 20])[:, None, None, None]).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1))
                                                                         .astype(np.float32), "w2"),
             numpy_helper.from_array(np.full(4, 0.5, np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["r"]),
         helper.make_node("Conv", ["r", "w2", "b"], ["y"])], "shared_bias",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    data = DataSet({"x": rng.standard_normal((8, 4, 8, 8)).astype(np.float32)})
    q = dataclasses.replace(import_model(model), calibration=data)
    result = PassManager(parse_pipeline("equalize{by=activations}"))(q)
    record = result.model.analysis.of("equalize")
    assert record["biases_copied"] == 1 and record["pairs"]  # the first reader copies; the pair was refused before
    x = data.feed(0, 8)
    np.testing.assert_allclose(run_onnx(result.model.to_proto(), x)[0], run_onnx(model, x)[0], rtol=1e-4, atol=1e-4)


def test_equalize_does_not_cross_relu6(tiny_cnn_proto):
    q = PassManager(parse_pipeline(f"{CLEAN},equalize"))(import_model(tiny_cnn_proto)).model
    skipped = q.analysis.of("equalize")["skipped"]
    assert any("Clip" in why for why in skipped)


def test_weight_scale_search_never_loses_to_max_abs_and_wins_on_a_heavy_tail():
    from irq.passes.weight_scales import search_scales

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    w[0, 0, 0, 0] = 12.0  # one outlier stretches channel 0's max-abs scale
    scales, ratio = search_scales(w, 0, QType.INT4)
    assert np.all(ratio <= 1.0) and ratio.mean() < 0.85
    assert scales[0] < 0.9 * 12.0 / 7  # the outlier is clipped, not given the whole grid
    per_tensor, tensor_ratio = search_scales(w, None, QType.INT4)
    assert per_tensor.shape == (1,) and tensor_ratio[0] < 0.85


def test_per_channel_false_in_a_recipe_gives_per_tensor_weights(tmp_path, fashion_model, fashion_calib):
    (tmp_path / "r.yaml").write_text("per_channel: false\n")
    report = irq.compile(fashion_model, "onnx-int8", tmp_path / "o", calib=fashion_calib, recipe=tmp_path / "r.yaml")
    assert {layer["granularity"] for layer in report["layers"]} == {"per-tensor"}
    model = onnx.load(str(tmp_path / "o" / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) >= 2]
    assert len(weight_dq) == 5 and all(len(inits[n.input[1]].dims) == 0 for n in weight_dq)


def test_accurate_preset_adds_equalization_and_where_irq_writes_weights_the_scale_search():
    onnx_passes = parse_pipeline(with_preset(get_target("onnx-int8"), "accurate").pipeline)
    names = [p.name for p in onnx_passes]
    assert names.index("equalize") < names.index("calibrate") < names.index("weight-scales") \
        < names.index("bias-correct") < names.index("insert-qdq")
    tflite = [p.name for p in parse_pipeline(with_preset(get_target("tflite-int8"), "accurate").pipeline)]
    assert "equalize" in tflite and "weight-scales" not in tflite  # the TFLite converter rounds weights itself
    assert with_preset(get_target("onnx-fp16"), "accurate").pipeline == get_target("onnx-fp16").pipeline


def test_int4_weights_are_refused_in_one_line_where_the_target_cannot_store_them(tmp_path, capsys, fashion_model,
                                                                                  fashion_calib):
    code = main(["compile", str(fashion_model), "-t", "tflite-int8", "--weights", "int4", "--calib",
                 str(fashion_calib), "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "int4 weights need an onnx or coreml target" in err[0]
    with pytest.raises(InputError, match="int4 weights need a static target"):
        with_weights(get_target("onnx-dynamic"), "int4")


@pytest.mark.parametrize("inputs", ["float", "quantized"])
def test_adaround_learns_roundings_that_cut_each_layers_output_error(tiny_cnn_proto, tiny_data, inputs):
    from irq.data import load_npz
    from irq.data.conform import conform
    from irq.pipeline.prepare import quantize

    target = with_preset(with_weights(get_target("onnx-int8"), "int4"), "max")
    model = import_model(tiny_cnn_proto)
    calib = conform(load_npz(tiny_data), model.graph, "calibration")
    q = quantize(model, target, calib,
                 pipeline=target.pipeline.replace("adaround", f"adaround{{steps=60,samples=32,inputs={inputs}}}"))
    record = q.analysis.of("adaround")
    assert record["layers"] >= 4 and record["mean_error_ratio"] < 0.9, record
    int4 = [r for r in q.rounded_weights.values() if np.prod(r.shape[1:]) >= 32]  # smaller filters keep int8
    assert int4 and all(r.min() >= -8 and r.max() <= 7 for r in int4)
    rounded = int4[0]
    proto = q.to_proto()  # the artifact holds exactly the learned integers
    held = {onnx.numpy_helper.to_array(i).tobytes() for i in proto.graph.initializer}
    assert rounded.astype(np.int8).tobytes() in held
    out = run_onnx(proto, calib.feed(0, 4))[0]
    assert np.isfinite(out).all()


@pytest.mark.slow
def test_presets_bring_all_int4_per_tensor_weights_within_a_third_of_a_point(tmp_path, fashion_model, fashion_calib,
                                                                              fashion_test):
    (tmp_path / "r.yaml").write_text("per_channel: false\n")
    drops = {}
    base = get_target("onnx-int8")  # every layer int4, the first conv's 9-weight filters too
    every_layer = dataclasses.replace(base, scheme=dataclasses.replace(base.scheme, int4_min_fan_in=0))
    for preset, disabled in (("fast", ["bias-correct"]), ("accurate", []), ("max", [])):
        report = irq.compile(fashion_model, every_layer, tmp_path / preset, calib=fashion_calib, eval=fashion_test,
                             recipe=tmp_path / "r.yaml", weights="int4", preset=preset, disable_passes=disabled,
                             checks=CHECKS)
        drops[preset] = report["accuracy"]["drop_top1_pt"]
        on_disk = json.loads((tmp_path / preset / "report.json").read_text())
        assert on_disk["preset"] == preset and on_disk["scheme"]["weight"] == "int4"
    # round to nearest loses 2 pt on these 1,000 test images (1.76 on all 10,000); bench/ptq_presets.py
    assert drops["fast"] >= 1.0 and drops["accurate"] <= 0.5 and drops["max"] <= 0.3, drops
    packed = [i for i in onnx.load(str(tmp_path / "max" / "model.onnx")).graph.initializer
              if i.data_type == onnx.TensorProto.INT4 and len(i.dims) >= 2]
    assert len(packed) == 5  # every layer's weights, two to a byte


def test_int4_weights_are_packed_and_small_filters_keep_int8(tmp_path, fashion_model, fashion_calib, fashion_test):
    reports = {storage: irq.compile(fashion_model, "onnx-int8", tmp_path / storage, calib=fashion_calib,
                                    eval=fashion_test, weights="int4", options={"int4_storage": storage},
                                    checks=CHECKS) for storage in ("packed", "int8")}
    model = onnx.load(str(tmp_path / "packed" / "model.onnx"))
    by_type = {t: [onnx.numpy_helper.to_array(i) for i in model.graph.initializer
                   if i.data_type == t and len(i.dims) >= 2] for t in (onnx.TensorProto.INT4, onnx.TensorProto.INT8)}
    assert len(by_type[onnx.TensorProto.INT4]) == 4 and reports["packed"]["artifact_info"]["int4_packed_weights"] == 4
    small = by_type[onnx.TensorProto.INT8]
    assert len(small) == 1 and small[0].shape[1:] == (1, 3, 3) and np.abs(small[0]).max() > 7  # 9 weights: 8 bits
    assert reports["packed"]["size_bytes"]["artifact"] < 0.6 * reports["int8"]["size_bytes"]["artifact"]
    held = onnx.load(str(tmp_path / "int8" / "model.onnx"))
    held_weights = sorted((onnx.numpy_helper.to_array(i) for i in held.graph.initializer
                           if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2), key=lambda a: a.size)
    packed_weights = sorted(by_type[onnx.TensorProto.INT4] + small, key=lambda a: a.size)
    for a, b in zip(packed_weights, held_weights, strict=True):  # the same integers, stored two ways
        np.testing.assert_array_equal(a.astype(np.int8), b)
    x = zoo.eval_data("fashion-cnn", 64).feed(0, 64)
    packed, kept = (run_onnx(str(tmp_path / s / "model.onnx"), x)[0] for s in ("packed", "int8"))
    # float vs int8 kernels round requantization differently: an activation may move by one step
    assert (packed.argmax(1) == kept.argmax(1)).mean() >= 0.98 and np.abs(packed - kept).max() < 0.05


def test_smooth_quant_moves_activation_outliers_into_weights_without_changing_the_function():
    from irq.data.conform import conform

    q = PassManager(parse_pipeline(CLEAN))(import_model("minilm")).model
    q.calibration = conform(zoo.calibration_data("minilm", 16), q.graph, "calibration")
    before = q.to_proto()
    result = PassManager(parse_pipeline("smooth-quant"))(q)
    record = result.model.analysis.of("smooth-quant")
    assert result.modified and record["groups"] == 24 and record["matmuls"] == 36  # 6 layers: QKV, out, FFN in/out
    feeds = zoo.eval_data("minilm", 8).feed(0, 8)
    ref, out = run_onnx(before, feeds)[0], run_onnx(result.model.to_proto(), feeds)[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_bias_shift_from_the_mean_input_equals_the_per_layer_probe(fashion_model):
    """E[conv(x, W - W_q)] = conv(E[x], W - W_q) (linear, padding included): both ways agree."""
    import irq.passes.bias_correct as bias_correct

    target = get_target("onnx-int8")
    q = dataclasses.replace(import_model(fashion_model), calibration=zoo.calibration_data("fashion-cnn", 24),
                            scheme=target.scheme, default_precision=target.default_precision)
    q = PassManager(parse_pipeline(f"{CLEAN},analyze,calibrate,plan-precision"))(q).model
    targets = bias_correct._targets(q)
    assert bias_correct._static_inputs(targets) and len(targets) == 5
    fast = PassManager(parse_pipeline("bias-correct"))(q.clone()).model.bias_shifts
    probe = bias_correct.mean_outputs(bias_correct._probe_model(q, targets), q.calibration)
    swept = PassManager(parse_pipeline(f"{CLEAN},analyze,calibrate{{input-means=64}},plan-precision,bias-correct"))(
        dataclasses.replace(q, model=import_model(fashion_model).model, ranges={}, plan={}, history=[])).model
    assert swept.analysis.of("bias-correct")["means_from"] == "calibration sweep"
    for (node, _), expected in zip(targets, probe, strict=True):
        for shifts in (fast, swept.bias_shifts):
            got = shifts[bias_correct.node_label(node)]
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_adaround_reconstructs_after_the_relu_or_relu6_that_alone_consumes_a_layer(tiny_cnn_proto):
    from irq.passes.adaround import _activation

    q = PassManager(parse_pipeline(CLEAN))(import_model(tiny_cnn_proto)).model
    found = {}
    for node in q.graph:
        if node.op_type in ("Conv", "Gemm"):
            act = _activation(node)
            consumer = [u.node.op_type for u in node.outputs[0].uses()]
            found[node.name] = (consumer, None if act is None else act[1], act is not None and act[0] is not None)
    bounds = {b for _, b, _ in found.values()}
    assert (0.0, float("inf")) in bounds and (0.0, 6.0) in bounds, found  # ReLU and ReLU6 (Clip 0..6)
    for consumer, b, has_bias in found.values():
        assert (b is not None) == (consumer in (["Relu"], ["Clip"])), found  # the linear head has none
        assert b is None or has_bias, found  # the folded BN's bias goes in with the activation


def test_adaround_on_quantized_inputs_learns_each_layer_after_the_earlier_ones_and_bias_correct_leaves_it(
        tiny_cnn_proto, tiny_data, monkeypatch):
    from irq.data import load_npz
    from irq.data.conform import conform
    from irq.passes.adaround import AdaRound
    from irq.pipeline.prepare import quantize

    seen: list[tuple[str, set[str]]] = []
    capture = AdaRound._quantized_input

    def recording(qmodel, layer, data):
        seen.append((layer.label, set(qmodel.rounded_weights)))
        return capture(qmodel, layer, data)

    monkeypatch.setattr(AdaRound, "_quantized_input", staticmethod(recording))
    target = get_target("onnx-int8")
    model = import_model(tiny_cnn_proto)
    calib = conform(load_npz(tiny_data), model.graph, "calibration")
    pipeline = target.pipeline.replace("bias-correct", "adaround{steps=40,samples=32,inputs=quantized},bias-correct")
    q = quantize(model, target, calib, pipeline=pipeline)
    assert len(seen) >= 4
    for k, (label, learnt) in enumerate(seen):  # every earlier layer's rounding is in its inputs
        assert learnt == {earlier for earlier, _ in seen[:k]}, (label, learnt)
    assert q.output_matched and q.output_matched <= set(q.rounded_weights)
    assert not q.output_matched & set(q.bias_shifts)  # their rounding already absorbs the mean shift
    record = q.analysis.of("bias-correct")  # it says why those layers kept their bias
    assert record.get("learnt_on_quantized_inputs") == len(q.output_matched) or "adaround" in record["skipped"]
