"""The shapes real exports take, on the trained fashion-cnn and its real data.

Each case is a bullet of the report that models from the wild broke irq: Paddle-style exports
(opset 11, every weight a Constant node), torch's ``x.view(x.size(0), -1)`` shape subgraph under
the budget search, a module with several outputs (class probabilities last) and a detector head
whose Concat joins boxes in pixels with scores in [0, 1].
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import run_onnx
from onnx import TensorProto, helper, numpy_helper

import irq
from irq.cli import main
from irq.data import load_npz
from irq.sensitivity.analysis import SensitivityOptions
from irq.sensitivity.metrics import Criterion
from irq.sensitivity.mixed import SearchOptions


def _paddle_style(fashion_model) -> onnx.ModelProto:
    """fashion-cnn as Paddle writes it: opset 11, weights in Constant nodes, a -1 batch dimension."""
    m = onnx.load(fashion_model)
    consts = [helper.make_node("Constant", [], [t.name], value=t, name=f"p2o.Constant.{i}")
              for i, t in enumerate(m.graph.initializer)]
    nodes = consts + list(m.graph.node)
    del m.graph.initializer[:]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    m.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("", 11))
    m.ir_version = 6
    return m


def _shape_flatten(fashion_model) -> onnx.ModelProto:
    """fashion-cnn with Flatten spelled as torch's ``x.view(x.size(0), -1)``: Shape, Gather, Concat, Reshape."""
    m = onnx.load(fashion_model)
    index = next(i for i, n in enumerate(m.graph.node) if n.op_type == "Flatten")
    flat = m.graph.node[index]
    src, dst = flat.input[0], flat.output[0]
    view = [helper.make_node("Shape", [src], ["view_shape"], name="/view/Shape"),
            helper.make_node("Gather", ["view_shape", "view_zero"], ["view_n"], axis=0, name="/view/Gather"),
            helper.make_node("Unsqueeze", ["view_n", "view_axes"], ["view_n1"], name="/view/Unsqueeze"),
            helper.make_node("Concat", ["view_n1", "view_minus1"], ["view_target"], axis=0, name="/view/Concat"),
            helper.make_node("Reshape", [src, "view_target"], [dst], name="/view/Reshape")]
    m.graph.node.remove(flat)
    for k, node in enumerate(view):
        m.graph.node.insert(index + k, node)
    m.graph.initializer.extend([numpy_helper.from_array(np.array(0, np.int64), "view_zero"),
                                numpy_helper.from_array(np.array([0], np.int64), "view_axes"),
                                numpy_helper.from_array(np.array([-1], np.int64), "view_minus1")])
    return m


def _three_heads(fashion_model) -> onnx.ModelProto:
    """fashion-cnn with a box head (N, 4) and a landmark head (N, 10) before its class probabilities."""
    m = onnx.load(fashion_model)
    hidden = next(n for n in m.graph.node if n.op_type == "Relu" and "classifier" in n.name).output[0]
    width = next(t for t in m.graph.initializer if t.name.endswith("classifier.4.weight")).dims[1]
    rng = np.random.default_rng(0)
    m.graph.initializer.extend([
        numpy_helper.from_array(rng.normal(0, 0.1, (4, width)).astype(np.float32), "box_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (10, width)).astype(np.float32), "landmark_w")])
    m.graph.node.extend([helper.make_node("Gemm", [hidden, "box_w"], ["box"], transB=1, name="box_head"),
                         helper.make_node("Gemm", [hidden, "landmark_w"], ["landmarks"], transB=1,
                                          name="landmark_head"),
                         helper.make_node("Softmax", ["logits"], ["prob"], axis=1, name="prob")])
    del m.graph.output[:]
    m.graph.output.extend([helper.make_tensor_value_info("box", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", 10]),
                           helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 10])])
    return m


@pytest.fixture(scope="module")
def small_eval(fashion_test):
    data = load_npz(fashion_test)
    return data.take(np.arange(300))


def test_paddle_style_constant_weights_are_quantized_and_the_opset_upgraded(tmp_path, fashion_model, fashion_calib,
                                                                             small_eval):
    path = tmp_path / "paddle.onnx"
    onnx.save(_paddle_style(fashion_model), path)
    before = path.read_bytes()
    report = irq.compile(path, "onnx-int8", tmp_path / "out", calib=fashion_calib, eval=small_eval,
                         measure_latency=False)
    art = onnx.load(tmp_path / "out" / "model.onnx")
    onnx.checker.check_model(art, full_check=True)
    assert next(o.version for o in art.opset_import if o.domain in ("", "ai.onnx")) >= 13
    int8_weights = [t for t in art.graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) >= 2]
    assert len(int8_weights) == 5  # three convs and two Gemms, per channel
    assert report["size_bytes"]["ratio"] < 0.35
    assert report["accuracy"]["drop_top1_pt"] < 1.0
    assert path.read_bytes() == before


def test_budget_search_and_layer_sqnr_on_a_graph_with_a_shape_subgraph(tmp_path, fashion_calib, fashion_model,
                                                                       small_eval):
    path = tmp_path / "view.onnx"
    onnx.save(_shape_flatten(fashion_model), path)
    search = SearchOptions(SensitivityOptions(subset=64, confirm=1, workers=1), max_evals=4, full_curve=False)
    report = irq.compile(path, "onnx-int8", tmp_path / "out", calib=fashion_calib, eval=small_eval,
                         criterion=Criterion("top1", -0.3), search=search, measure_latency=False)
    mixed = report["mixed_precision"]
    assert mixed["met"] and report["accuracy"]["drop_top1_pt"] <= 0.3 + 1e-9
    assert {row["name"] for row in mixed["kept_layers"]} <= {x["name"] for x in report["layers"]}
    sens = json.loads((tmp_path / "out" / "sensitivity.json").read_text())
    scored = {r["op_type"] for r in sens["layers"]}
    members = {m for r in sens["layers"] for m in r["members"]}
    assert {"Conv", "Gemm"} <= scored and not members & {"/view/Shape", "/view/Gather", "/view/Concat"}
    layer_error = report["layer_error"]
    assert "note" not in layer_error and len(layer_error["layers"]) >= 5
    assert all(np.isfinite(x["sqnr_db"]) for x in layer_error["layers"])
    assert (tmp_path / "out" / "report.html").exists() and "crash_test" in report  # one driver: every check


def test_several_outputs_score_the_class_probabilities(tmp_path, fashion_model, fashion_calib, small_eval):
    path = tmp_path / "heads.onnx"
    onnx.save(_three_heads(fashion_model), path)
    report = irq.compile(path, "onnx-int8", tmp_path / "out", calib=fashion_calib, eval=small_eval,
                         measure_latency=False)
    assert report["verification"]["scored_output"] == "prob"
    assert report["accuracy"]["float"]["top1"] > 0.85 and report["accuracy"]["drop_top1_pt"] < 1.5
    assert set(report["error"]["per_output"]) == {"box", "landmarks", "prob"}
    assert all(e["sqnr_db"] > 15 for e in report["error"]["per_output"].values())


def test_output_flag_steers_the_budget_to_the_named_output(tmp_path, fashion_model, fashion_calib, fashion_test,
                                                            capsys):
    path = tmp_path / "heads.onnx"
    onnx.save(_three_heads(fashion_model), path)
    code = main(["compile", str(path), "-t", "onnx-int8", "--calib", str(fashion_calib), "--eval", str(fashion_test),
                 "--output", "prob", "--min-agreement", "0.97", "--subset", "32", "--confirm", "1", "--workers", "1",
                 "--max-evals", "4", "-o", str(tmp_path / "out"), "--no-latency", "--no-crash-test"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verification"]["scored_output"] == "prob"
    assert report["mixed_precision"]["chosen"]["metric"] == pytest.approx(report["agreement"]["top1"])
    code = main(["compile", str(path), "-t", "onnx-int8", "--calib", str(fashion_calib), "--eval",
                 str(fashion_test), "--output", "nope", "--min-agreement", "0.9", "-o", str(tmp_path / "o2")])
    assert code == 2 and "'nope' is not an output" in capsys.readouterr().err


def _detector_head() -> onnx.ModelProto:
    """A raw YOLO-style head: boxes in pixels (0..640) and sigmoid scores concatenated on one axis."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w_box"),
             numpy_helper.from_array(rng.normal(0, 0.3, (3, 8, 1, 1)).astype(np.float32), "w_cls"),
             numpy_helper.from_array(np.array(640.0, np.float32), "img")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["f"], pads=[1, 1, 1, 1], name="stem"),
             helper.make_node("Relu", ["f"], ["fr"], name="stem_relu"),
             helper.make_node("Conv", ["fr", "w_box"], ["b"], name="box_conv"),
             helper.make_node("Sigmoid", ["b"], ["bs"], name="box_sigmoid"),
             helper.make_node("Mul", ["bs", "img"], ["boxes"], name="box_scale"),
             helper.make_node("Conv", ["fr", "w_cls"], ["c"], name="cls_conv"),
             helper.make_node("Sigmoid", ["c"], ["scores"], name="cls_sigmoid"),
             helper.make_node("Concat", ["boxes", "scores"], ["y"], axis=1, name="head_concat")]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_concat_of_boxes_and_scores_is_a_hazard_kept_at_a_working_precision(tmp_path, capsys):
    path = tmp_path / "head.onnx"
    onnx.save(_detector_head(), path)
    x = np.random.default_rng(1).normal(size=(48, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    assert main(["audit", str(path)]) == 0
    assert "head_concat" in next(line for line in capsys.readouterr().out.splitlines() if "hazard" in line)
    report = irq.compile(path, "onnx-int8", tmp_path / "out", calib=tmp_path / "d.npz", eval=tmp_path / "d.npz",
                         measure_latency=False)
    concat = next(x for x in report["layers"] if x["name"] == "head_concat")
    assert concat["precision"] in ("fp32", "fp16", "int16")
    float_y = np.concatenate([run_onnx(str(path), {"x": x[i:i + 1]})[0] for i in range(len(x))])
    art_y = np.concatenate([run_onnx(str(tmp_path / "out" / "model.onnx"), {"x": x[i:i + 1]})[0]
                            for i in range(len(x))])
    # int8 on one shared scale would leave scores steps of 640/255 = 2.5 apart: every score 0
    assert np.abs(art_y[:, 4:] - float_y[:, 4:]).max() < 0.05


def _masked_attention() -> onnx.ModelProto:
    """A transformer's masked softmax: scores + (1 - mask) * finfo(float32).min, as BERT exports write it."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (8, 4)).astype(np.float32), "wq"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), "lowest"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["scores"], name="scores"),
             helper.make_node("Unsqueeze", ["mask", "axis1"], ["mask3"], name="mask_rows"),
             helper.make_node("Cast", ["mask3"], ["maskf"], to=TensorProto.FLOAT, name="cast_mask"),
             helper.make_node("Sub", ["one", "maskf"], ["inverted"], name="invert_mask"),
             helper.make_node("Mul", ["inverted", "lowest"], ["bias"], name="mask_bias"),
             helper.make_node("Add", ["scores", "bias"], ["masked"], name="mask_add"),
             helper.make_node("Softmax", ["masked"], ["y"], axis=-1, name="softmax")]
    graph = helper.make_graph(
        nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 8]),
                             helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_an_attention_mask_of_finfo_min_stays_float_and_tflite_int8_lowers(tmp_path):
    # One int8 scale for scores + finfo.min is 1.3e36: the converter wrote it and irq refused the
    # model ("degenerate int8 scales", all-MiniLM). The plan now keeps the mask's path float.
    path = tmp_path / "attention.onnx"
    onnx.save(_masked_attention(), path)
    rng = np.random.default_rng(1)
    mask = np.ones((48, 4), np.int64)
    mask[:, 3] = 0  # the last position is padding in every sample
    x = rng.normal(size=(48, 5, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, mask=mask)
    report = irq.compile(path, "tflite-int8", tmp_path / "out", calib=tmp_path / "d.npz", eval=tmp_path / "d.npz",
                         measure_latency=False)
    reasons = {x["name"]: x["reason"] for x in report["layers"]}
    assert "unrepresentable-range" in reasons["mask_add"] and "unrepresentable-range" in reasons["softmax"]
    assert report["error"]["cosine"] > 0.999, report["error"]
