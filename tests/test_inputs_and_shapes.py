"""Models users bring: dynamic shapes, -1 dims, rank+1 feeds, batch axes, frozen inputs, RNNs, safety."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import irq
from irq.cli import main
from irq.data import DataSet, save_npz
from irq.data.conform import conform
from irq.errors import InputError
from irq.frontends.onnx_file import from_proto
from irq.ir.ort import make_session
from irq.pipeline.infra import PassManager
from irq.pipeline.registry import parse_pipeline


def _dynamic_hw_model() -> onnx.ModelProto:
    """Conv, then a Reshape whose target shape is computed from Shape(x): fine for ONNX, hard for converters."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "i01"], ["nc"], axis=0),
        helper.make_node("Concat", ["nc", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["y"], name="flatten_hw"),
    ]
    inits = [w, numpy_helper.from_array(np.array([0, 1], np.int64), "i01"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "HW"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_fixed_shapes_fold_the_shape_subgraph():
    model = from_proto(_dynamic_hw_model(), "dyn")
    fixed = PassManager(parse_pipeline("fix-input-shapes{shapes=x:1x3x8x10},cleanup"))(model.clone()).model
    ops = [n.op_type for n in fixed.graph]
    assert "Shape" not in ops and "Concat" not in ops and "Gather" not in ops
    assert list(fixed.graph.outputs[0].shape) == [1, 4, 80]
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 10)).astype(np.float32)
    np.testing.assert_allclose(make_session(fixed.to_bytes()).run(None, {"x": x})[0],
                               make_session(model.to_bytes()).run(None, {"x": x})[0], atol=1e-5)


def _position_table_model() -> onnx.ModelProto:
    """MiniLM's pattern: a constant table sliced to the sequence length, declared with symbolic dims."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.normal(size=(1, 16, 4)).astype(np.float32), "table")
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["length"], axis=0),
        helper.make_node("Unsqueeze", ["length", "zero_axis"], ["end"]),
        helper.make_node("Slice", ["table", "zero", "end", "one_axis"], ["pos"], name="slice_positions"),
        helper.make_node("Add", ["x", "pos"], ["summed"], name="add_positions"),
        helper.make_node("Shape", ["summed"], ["s2"]),
        helper.make_node("Gather", ["s2", "first"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["summed", "target"], ["y"], name="flatten"),
    ]
    inits = [table, numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one_axis"),
             numpy_helper.from_array(np.array([0], np.int64), "first"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L", 4])
    graph = helper.make_graph(nodes, "positions", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "NL4"])], inits,
                              value_info=[helper.make_tensor_value_info("pos", TensorProto.FLOAT, ["a", "b", 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_folded_constant_takes_its_tensor_shape_so_later_shape_arithmetic_folds():
    # The folded Slice keeps its declared [a, b, 4]; while it did, the Add's batch stayed
    # symbolic, the Reshape target never folded and onnx2tf lost MiniLM's attention shapes.
    model = from_proto(_position_table_model(), "positions")
    fixed = PassManager(parse_pipeline("fix-input-shapes{shapes=x:1x5x4},cleanup"))(model.clone()).model
    assert [n.op_type for n in fixed.graph] == ["Add", "Reshape"]
    assert all(isinstance(d, int) for n in fixed.graph for v in n.outputs for d in v.shape)
    assert list(fixed.graph.outputs[0].shape) == [1, 20]
    x = np.random.default_rng(1).normal(size=(1, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(make_session(fixed.to_bytes()).run(None, {"x": x})[0],
                               make_session(model.to_bytes()).run(None, {"x": x})[0], atol=1e-6)


def test_fix_input_shapes_rejects_a_wrong_rank_or_name():
    model = from_proto(_dynamic_hw_model(), "dyn")
    with pytest.raises(Exception, match="rank 4"):
        PassManager(parse_pipeline("fix-input-shapes{shapes=x:1x3x8}"))(model.clone())
    with pytest.raises(Exception, match="no input nope"):
        PassManager(parse_pipeline("fix-input-shapes{shapes=nope:1}"))(model.clone())


def test_static_target_takes_shapes_from_calibration_data(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_hw_model(), path)
    x = np.random.default_rng(2).normal(size=(32, 3, 8, 10)).astype(np.float32)
    report = irq.compile(path, "coreml-int8", tmp_path / "out", calib=DataSet({"x": x}), eval=DataSet({"x": x[:8]}),
                         measure_latency=False)
    assert report["input_shapes"] == {"x": {"shape": [1, 3, 8, 10], "source": "calibration data"}}
    assert report["error"]["sqnr_db"] > 20


def test_input_shape_flag(tmp_path, capsys):
    path = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_hw_model(), path)
    x = np.random.default_rng(3).normal(size=(16, 3, 6, 6)).astype(np.float32)
    save_npz(tmp_path / "d.npz", DataSet({"x": x}))
    code = main(["compile", str(path), "-t", "onnx-int8", "--calib", str(tmp_path / "d.npz"), "--eval",
                 str(tmp_path / "d.npz"), "--input-shape", "x=1,3,6,6", "-o", str(tmp_path / "o"), "--no-latency",
                 "--no-crash-test"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["input_shapes"]["x"] == {"shape": [1, 3, 6, 6], "source": "--input-shape"}
    art = onnx.load(tmp_path / "o" / "model.onnx")
    assert [d.dim_value for d in art.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 6, 6]


def test_paddle_minus_one_dims_are_symbolic():
    model = _dynamic_hw_model()
    for d in model.graph.input[0].type.tensor_type.shape.dim:
        if d.dim_param in ("N", "H", "W"):
            d.Clear()
            d.dim_value = -1
    qm = from_proto(model, "paddle")
    assert [isinstance(d, int) for d in qm.graph.inputs[0].shape] == [False, True, False, False]


def _stateful_model() -> onnx.ModelProto:
    """y = tanh(x @ W + state[0]) * sr/16000; new state = [y; state[1]]: a recurrent-style interface."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="proj"),
        helper.make_node("Gather", ["state", "zero"], ["s0"], axis=0),
        helper.make_node("Add", ["xw", "s0"], ["a"]),
        helper.make_node("Tanh", ["a"], ["t"]),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["srf", "k"], ["scale"]),
        helper.make_node("Mul", ["t", "scale"], ["y"]),
        helper.make_node("Unsqueeze", ["y", "zero1"], ["y1"]),
        helper.make_node("Gather", ["state", "one"], ["s1"], axis=0),
        helper.make_node("Unsqueeze", ["s1", "zero1"], ["s1u"]),
        helper.make_node("Concat", ["y1", "s1u"], ["state_out"], axis=0),
    ]
    inits = [numpy_helper.from_array(rng.normal(size=(6, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "zero1"), numpy_helper.from_array(np.float32(16000), "k")]
    graph = helper.make_graph(nodes, "stateful", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 6]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "B", 8]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 8]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "B", 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _stateful_rows(n: int = 24) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {"x": rng.normal(size=(n, 1, 6)).astype(np.float32),
            "state": rng.normal(size=(n, 2, 1, 8)).astype(np.float32), "sr": np.full(n, 16000, np.int64)}


def _stateful_file(tmp_path, rows: int):
    """The stateful model saved to a file, and ``rows`` rows of its data."""
    path = tmp_path / "stateful.onnx"
    onnx.save(_stateful_model(), path)
    return path, DataSet(_stateful_rows(rows))


def test_rank_plus_one_arrays_are_whole_feeds():
    qm = from_proto(_stateful_model(), "stateful")
    data = conform(DataSet(_stateful_rows()), qm.graph)
    assert data.batch_axes == {"x": 0, "state": 1, "sr": None}
    feed = next(data.batches(8))
    assert feed["x"].shape == (8, 6) and feed["state"].shape == (2, 8, 8) and feed["sr"].shape == ()
    # rows that differ in an input without a batch axis are fed one at a time
    rows = _stateful_rows()
    rows["sr"][3] = 8000
    assert conform(DataSet(rows), qm.graph).max_batch() == 1


def test_batch_axis_flag_puts_rows_on_the_named_axis():
    qm = from_proto(_stateful_model(), "stateful")
    rows = _stateful_rows()
    rows["state"] = rows["state"][:, :, 0, :]  # (N, 2, 8): rows without the batch axis
    data = conform(DataSet(rows), qm.graph, batch_axes={"state": 1})
    assert next(data.batches(4))["state"].shape == (2, 4, 8)
    with pytest.raises(Exception, match="rank"):
        conform(DataSet(rows), qm.graph)


def test_stateful_model_compiles_and_verifies_with_its_state_outputs(tmp_path):
    path, data = _stateful_file(tmp_path, 32)
    report = irq.compile(path, "onnx-int8", tmp_path / "out", calib=data, eval=data, measure_latency=False)
    per = report["error"]["per_output"]
    assert set(per) == {"y", "state_out"} and per["y"]["sqnr_db"] > 25 and per["state_out"]["sqnr_db"] > 25
    assert report["crash_test"] and all(r["outcome"] != "crash" for r in report["crash_test"])


def test_core_ml_checks_a_state_input_whose_batch_is_not_axis_0(tmp_path):
    """The package's read-back check feeds calibration rows where the data says ([2, batch, 8] state)."""
    path, data = _stateful_file(tmp_path, 16)
    report = irq.compile(path, "coreml-int8", tmp_path / "out", calib=data, eval=data, measure_latency=False,
                         input_values={"sr": 16000})
    numerics = report["artifact_info"]["checks"]["numerics"]
    assert report["error"]["per_output"]["state_out"]["sqnr_db"] > 25, report["error"]
    assert numerics["samples"] == 4 and numerics["min_cosine"] > 0.99


def test_budget_search_workers_feed_state_rows_as_whole_feeds(tmp_path):
    """The search's worker processes reload the data from disk: rank+1 state rows must stay whole feeds."""
    from irq.sensitivity.analysis import SensitivityOptions
    from irq.sensitivity.metrics import Criterion
    from irq.sensitivity.mixed import SearchOptions

    path, data = _stateful_file(tmp_path, 16)
    search = SearchOptions(SensitivityOptions(subset=8, confirm=1, workers=2), max_evals=4, full_curve=False)
    report = irq.compile(path, "onnx-int8", tmp_path / "out", calib=data, eval=data, measure_latency=False,
                         criterion=Criterion("cosine", 0.5), search=search)
    assert report["mixed_precision"]["met"] and report["mixed_precision"]["evaluations"] >= 1


def test_stored_data_keeps_where_rows_go():
    from irq.data import StoredData

    qm = from_proto(_stateful_model(), "stateful")
    data = conform(DataSet(_stateful_rows(6)), qm.graph)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        back = StoredData.save(Path(tmp) / "d.npz", data).load()
        want, got = next(data.batches(3)), next(back.batches(3))
        assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
        assert all(np.array_equal(got[k], want[k]) for k in want)


def test_frozen_input_is_removed_and_checked(tmp_path):
    path, data = _stateful_file(tmp_path, 16)
    report = irq.compile(path, "onnx-fp32", tmp_path / "out", calib=data, eval=data, measure_latency=False,
                         input_values={"sr": 16000})
    assert report["frozen_inputs"] == {"sr": 16000}
    assert [i.name for i in onnx.load(tmp_path / "out" / "model.onnx").graph.input] == ["x", "state"]
    assert report["error"]["sqnr_db"] > 100
    with pytest.raises(InputError, match="freezes sr=8000"):
        irq.compile(path, "onnx-fp32", tmp_path / "out2", calib=data, input_values={"sr": 8000})


def test_freezing_the_if_condition_inlines_the_branch():
    branch_nodes = lambda k: [helper.make_node("Mul", ["x", k], [f"out_{k}"])]  # noqa: E731
    then_g = helper.make_graph(branch_nodes("two"), "then", [], [helper.make_tensor_value_info("out_two", 1, None)])
    else_g = helper.make_graph(branch_nodes("three"), "else", [], [helper.make_tensor_value_info("out_three", 1, None)])
    nodes = [helper.make_node("Equal", ["sr", "k16"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)]
    inits = [numpy_helper.from_array(np.array(16000, np.int64), "k16"), numpy_helper.from_array(np.float32(2), "two"),
             numpy_helper.from_array(np.float32(3), "three")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 4]),
                                           helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", 1, ["N", 4])], inits)
    qm = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), "if")
    out = PassManager(parse_pipeline("freeze-inputs{values=sr:16000},cleanup"))(qm).model
    assert [n.op_type for n in out.graph] == ["Mul"] and [v.name for v in out.graph.inputs] == ["x"]
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(make_session(out.to_bytes()).run(None, {"x": x})[0], 2 * x)


def test_compile_refuses_to_overwrite_its_input(tmp_path, capsys):
    path = tmp_path / "model.onnx"
    onnx.save(_dynamic_hw_model(), path)
    before = path.read_bytes()
    code = main(["compile", str(path), "-t", "onnx-fp32", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "would overwrite the input model" in err and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before


@pytest.mark.parametrize("recipe,needle", [("calibration: bogus", "calibration must be one of"),
                                           ("percentile: 20", "percentile must be"),
                                           ("activation: int9", "activation must be one of"),
                                           ("reduce_range: maybe", "reduce_range must be"),
                                           ("layers: {name: x}", "'layers' must be a list")])
def test_every_recipe_field_is_checked(tmp_path, capsys, recipe, needle):
    (tmp_path / "r.yaml").write_text(recipe + "\n")
    code = main(["compile", "fashion-cnn", "-t", "onnx-fp32", "--recipe", str(tmp_path / "r.yaml"),
                 "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "r.yaml" in err and len(err.strip().splitlines()) == 1


def test_tflite_int8_of_a_dynamic_hw_model_takes_its_shape_from_the_data(tmp_path):
    """The YOLOv8n failure: onnx2tf cannot lower Shape-driven Reshapes on dynamic H/W; fixed shapes fold them."""
    path = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_hw_model(), path)
    x = np.random.default_rng(4).normal(size=(24, 3, 8, 10)).astype(np.float32)
    report = irq.compile(path, "tflite-int8", tmp_path / "out", calib=DataSet({"x": x}), eval=DataSet({"x": x[:8]}),
                         measure_latency=False)
    assert report["input_shapes"]["x"]["shape"] == [1, 3, 8, 10]
    assert report["error"]["sqnr_db"] > 20


def test_coremltools_import_noise_does_not_reach_the_user(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_hw_model(), path)
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(5).normal(size=(8, 3, 6, 6)).astype(np.float32))
    run = subprocess.run([sys.executable, "-m", "irq.cli", "compile", str(path), "-t", "coreml-fp16", "--eval",
                          str(tmp_path / "d.npz"), "-o", str(tmp_path / "o"), "--no-latency", "--no-crash-test"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "_MLModelProxy" not in run.stderr + run.stdout and "Traceback" not in run.stderr
