"""Verification: crash-test cases each fire on a model built to fail them; budgets, schema, HTML.

Models are built by hand with onnx.helper (and run through the crash test's child process, as
in real use); the budget, per-layer and report tests use the shipped fashion-cnn and its real
Fashion-MNIST test images.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import irq
from irq.api import verify
from irq.cli import main
from irq.data import DataSet, load_data
from irq.report.build import validate_report
from irq.verify.checks import VerifyOptions, speed_warnings
from irq.verify.crashtest import CrashTestOptions, crash_test


def _model(nodes, inits=(), shape=(None, 4), out_shape=None, opset=17) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape or shape))
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _data(shape=(16, 4), lo=-1.0, hi=1.0) -> DataSet:
    return DataSet({"x": np.random.default_rng(0).uniform(lo, hi, size=shape).astype(np.float32)})


def _run(tmp_path: Path, model: bytes, data: DataSet | None = None, float_model: bytes | None = None,
         **kw) -> dict[str, dict]:
    path = tmp_path / "artifact.onnx"
    path.write_bytes(model)
    rows = crash_test(path, "onnx", float_model or model, data or _data(), **kw)
    assert all(set(r) >= {"case", "passed", "outcome", "detail"} for r in rows)
    return {r["case"]: r for r in rows}


def _const(name: str, value) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.asarray(value), name)


def test_a_healthy_model_passes_every_case(tmp_path):
    rows = _run(tmp_path, _model([helper.make_node("Tanh", ["x"], ["y"])]))
    assert set(rows) == {"black", "white", "mid-grey", "uniform-noise", "far-outside", "nan-input", "inf-input"}
    assert all(r["passed"] for r in rows.values()), rows
    # NaN in, NaN out is accepted but reported
    assert rows["nan-input"]["outcome"] == "nonfinite-output" and "NaN" in rows["nan-input"]["detail"]


def test_log_of_the_input_fails_black_with_nan(tmp_path):
    rows = _run(tmp_path, _model([helper.make_node("Log", ["x"], ["y"])]))
    assert not rows["black"]["passed"] and "NaN" in rows["black"]["detail"]
    assert "float: " in rows["black"]["detail"]  # says whether float does the same
    assert rows["white"]["passed"]


def test_a_constant_output_fails_noise_and_black_vs_white(tmp_path):
    nodes = [helper.make_node("Mul", ["x", "zero"], ["z"]), helper.make_node("Add", ["z", "c"], ["y"])]
    rows = _run(tmp_path, _model(nodes, [_const("zero", np.float32(0)), _const("c", np.float32(3))]))
    assert not rows["uniform-noise"]["passed"] and "one output" in rows["uniform-noise"]["detail"]
    assert not rows["far-outside"]["passed"]
    assert not rows["white"]["passed"] and "all-black" in rows["white"]["detail"]
    assert rows["black"]["passed"]


def test_overflow_to_inf_fails_far_outside_only(tmp_path):
    nodes = [helper.make_node("Mul", ["x", "k"], ["z"]), helper.make_node("Exp", ["z"], ["y"])]
    rows = _run(tmp_path, _model(nodes, [_const("k", np.float32(10))]))
    assert not rows["far-outside"]["passed"] and "inf" in rows["far-outside"]["detail"]
    assert all(rows[c]["passed"] for c in ("black", "white", "mid-grey", "uniform-noise"))


def test_an_int8_output_stuck_at_qmax_fails(tmp_path):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])]
    identity = _model([helper.make_node("Identity", ["x"], ["y"])])
    artifact = _model(nodes, [_const("s", np.float32(0.01)), _const("zp", np.int8(0))])
    rows = _run(tmp_path, artifact, float_model=identity)
    assert not rows["far-outside"]["passed"] and "qmin/qmax" in rows["far-outside"]["detail"]
    assert rows["uniform-noise"]["passed"]
    # A float model that answers at the same extremes (a detector shown nothing) is not a failure.
    rows = _run(tmp_path, artifact)
    assert rows["far-outside"]["passed"]


def test_odd_spatial_size_fails_a_model_that_assumes_multiples_of_32(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    model = _model(nodes, [_const("shape", np.array([-1, 32], np.int64))], shape=("N", 1, "H", "W"),
                   out_shape=("M", 32))
    any_size = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])], [_const("shape", np.array([-1], np.int64))],
                      shape=("N", 1, "H", "W"), out_shape=("M",))
    rows = _run(tmp_path, model, _data((4, 1, 16, 16)), float_model=any_size)
    aspect = [r for name, r in rows.items() if name.startswith("aspect-")]
    assert len(aspect) == 1 and not aspect[0]["passed"] and aspect[0]["outcome"] == "error"
    h, w = map(int, aspect[0]["case"].split("-")[1].split("x"))
    assert h != w and h % 32 and w % 32
    assert rows["uniform-noise"]["passed"]


def test_an_input_float_rejects_too_is_not_applicable(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    model = _model(nodes, [_const("shape", np.array([-1, 32], np.int64))], shape=("N", 1, "H", "W"),
                   out_shape=("M", 32))
    rows = _run(tmp_path, model, _data((4, 1, 16, 16)))
    (aspect,) = [r for name, r in rows.items() if name.startswith("aspect-")]
    assert aspect["passed"] and aspect["outcome"] == "skipped"
    assert aspect["detail"].startswith("not applicable: the float model rejects this input too")


_CRASHY = '''
import os, signal, time
import numpy as np
from irq.backends.onnx_qdq import OnnxRunner

class Crashy(OnnxRunner):
    def run(self, feeds):
        x = feeds["x"]
        if np.isnan(x).any():
            os.kill(os.getpid(), signal.SIGSEGV)
        if np.isinf(x).any() and os.environ.get("CRASHY_HANG"):
            time.sleep(600)
        return super().run(feeds)

def make(path):
    return Crashy(str(path))
'''


def test_a_segfault_is_contained_and_the_next_cases_still_run(tmp_path, monkeypatch):
    (tmp_path / "crashy_runner.py").write_text(_CRASHY)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    rows = _run(tmp_path, _model([helper.make_node("Tanh", ["x"], ["y"])]), runner_factory="crashy_runner:make")
    assert rows["nan-input"]["outcome"] == "crash" and "SIGSEGV" in rows["nan-input"]["detail"]
    assert not rows["nan-input"]["passed"]
    assert rows["inf-input"]["outcome"] == "ok"  # it ran, in a fresh child after the crash
    assert rows["black"]["passed"]


def test_a_hang_is_killed_and_reported(tmp_path, monkeypatch):
    (tmp_path / "crashy_runner.py").write_text(_CRASHY)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("CRASHY_HANG", "1")
    rows = _run(tmp_path, _model([helper.make_node("Tanh", ["x"], ["y"])]), runner_factory="crashy_runner:make",
                options=CrashTestOptions(timeout_s=5))
    assert rows["inf-input"]["outcome"] == "crash" and "hung" in rows["inf-input"]["detail"]


# --- the real model: per-layer SQNR, budgets, report and HTML --------------------------------------


@pytest.fixture(scope="module")
def small_test(tmp_path_factory, fashion_test) -> Path:
    data = load_data(fashion_test)
    path = tmp_path_factory.mktemp("data") / "test300.npz"
    np.savez(path, x=np.asarray(data.inputs["x"][:300]), y=np.asarray(data.labels[:300]))
    return path


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, fashion_model, fashion_calib, small_test):
    out = tmp_path_factory.mktemp("int8")
    sens = {"model": "fashion_cnn", "target": "onnx-int8", "metric": "sqnr",
            "layers": [{"rank": 1, "layer": "/features/features.0/Conv", "gain": {"sqnr": 5.2}},
                       {"rank": 2, "layer": "/classifier/classifier.1/Gemm", "gain": {"sqnr": 1.1}}]}
    (out / "sensitivity.json").write_text(json.dumps(sens))
    report = irq.compile(fashion_model, "onnx-int8", out, calib=fashion_calib, eval=small_test)
    return report, out


def test_per_layer_sqnr_in_graph_order(compiled):
    report, _ = compiled
    le = report["layer_error"]
    names = [r["layer"] for r in le["layers"]]
    assert names[0] == "/features/features.0/Conv" and names[-1] == "/classifier/classifier.4/Gemm"
    assert le["unmatched"] == 0 and le["samples"] == 64
    # a ReLU folded into its quantizer is read at the quantizer's output; its conv before the ReLU
    relu = next(r for r in le["layers"] if r["op_type"] == "Relu")
    assert relu["read_at"].endswith("_dequantized")
    assert all(15 < r["sqnr_db"] < 80 for r in le["layers"])
    # the last layer's SQNR is the output SQNR (same data, same artifact)
    assert le["layers"][-1]["sqnr_db"] == pytest.approx(report["error"]["sqnr_db"], abs=3)


def test_report_json_validates_and_lists_the_crash_test(compiled):
    _, out = compiled
    on_disk = json.loads((out / "report.json").read_text())
    validate_report(on_disk)
    assert {r["case"] for r in on_disk["crash_test"]} >= {"black", "white", "nan-input", "far-outside"}
    assert on_disk["latency"]["baseline"].startswith("onnxruntime") and on_disk["latency"]["float"]["runs"] >= 30
    broken = dict(on_disk, crash_test=[{"case": "black", "passed": "yes", "detail": ""}])
    with pytest.raises(irq.errors.VerificationError, match="crash_test"):
        validate_report(broken)


def test_html_report_is_self_contained_with_its_plots(compiled):
    _, out = compiled
    page = (out / "report.html").read_text()
    assert not re.search(r"https?://|(?:src|href)\s*=\s*['\"](?!data:|#)", page)
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) >= 3  # latency, per-layer SQNR, sensitivity (size: bars in the page itself)
    assert "artifact = " in page and "% of float" in page
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    for heading in ("Summary", "Per-layer SQNR", "Latency", "Size", "Sensitivity", "Crash test"):
        assert heading in page


def test_budgets_met_exit_0_missed_exit_3_report_still_written(compiled, fashion_model, small_test, tmp_path,
                                                              capsys):
    _, out = compiled
    args = ["verify", str(fashion_model), str(out / "model.onnx"), "--eval", str(small_test), "--no-crash-test",
            "--no-layer-error"]
    ok = tmp_path / "ok.json"
    assert main([*args, "-o", str(ok), "--max-drop", "3", "--min-agreement", "0.95", "--min-sqnr", "15",
                 "--max-size-ratio", "0.5", "--no-latency"]) == 0
    assert json.loads(ok.read_text())["budgets"]["passed"] is True
    bad = tmp_path / "bad.json"
    assert main([*args, "-o", str(bad), "--min-sqnr", "200", "--max-size-ratio", "0.5", "--min-speedup", "1000"]) == 3
    written = json.loads(bad.read_text())
    validate_report(written)
    by_name = {c["budget"]: c for c in written["budgets"]["checks"]}
    assert not by_name["min_sqnr"]["passed"] and by_name["max_size_ratio"]["passed"]
    assert not by_name["min_speedup"]["passed"] and by_name["min_speedup"]["value"] > 0
    assert bad.with_suffix(".html").exists()
    assert "BUDGET MISSED" in bad.with_suffix(".html").read_text()
    assert "min_sqnr" in capsys.readouterr().err


def test_a_budget_that_cannot_be_measured_fails(compiled, fashion_model, tmp_path, fashion_test):
    _, out = compiled
    unlabelled = tmp_path / "nolabels.npz"
    np.savez(unlabelled, x=np.asarray(load_data(fashion_test).inputs["x"][:50]))
    code = main(["verify", str(fashion_model), str(out / "model.onnx"), "--eval", str(unlabelled), "--no-latency",
                 "--no-crash-test", "--max-drop", "1", "--min-speedup", "1", "-o", str(tmp_path / "r.json")])
    assert code == 3
    checks = json.loads((tmp_path / "r.json").read_text())["budgets"]["checks"]
    assert all(c["value"] is None and "not measured" in c["detail"] for c in checks)


def test_compile_exits_3_after_writing_the_artifact(fashion_model, fashion_calib, tmp_path):
    out = tmp_path / "o"
    code = main(["compile", str(fashion_model), "-t", "onnx-int8", "--calib", str(fashion_calib), "-o", str(out),
                 "--max-size-ratio", "0.01"])
    assert code == 3
    assert (out / "model.onnx").exists() and (out / "report.html").exists()
    assert json.loads((out / "report.json").read_text())["budgets"]["passed"] is False


def test_a_collapsed_class_is_flagged(compiled, fashion_model, small_test, tmp_path):
    model = onnx.load(str(fashion_model))
    bias = next(i for i in model.graph.initializer if i.name == "classifier.4.bias")
    b = onnx.numpy_helper.to_array(bias).copy()
    b[3] -= 8.0  # class 3 loses most of its wins; the others barely move
    bias.CopyFrom(onnx.numpy_helper.from_array(b, bias.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    report = verify(fashion_model, broken, small_test, checks=VerifyOptions(measure_latency=False, crash_test=False))
    worst = report["verification"]["per_class_worst"][0]
    assert worst["class"] == 3 and worst["collapsed"] and worst["drop_pt"] > 10
    assert any(w.startswith("class-collapse: class 3") for w in report["warnings"])


def test_honest_speed_warning_says_slower_and_not_faster():
    timing = lambda f, a: {"float": {"median_ms": f}, "artifact": {"median_ms": a}, "speedup": f / a}  # noqa: E731
    assert "SLOWER" in speed_warnings(timing(1.0, 2.0))[0]
    assert "NOT FASTER" in speed_warnings(timing(1.0, 0.98))[0]
    assert speed_warnings(timing(2.0, 1.0)) == []


def test_tflite_latency_against_a_float_tflite(fashion_model, fashion_calib, small_test, tmp_path):
    pytest.importorskip("ai_edge_litert")
    report = irq.compile(fashion_model, "tflite-int8", tmp_path, calib=fashion_calib, eval=small_test)
    lat = report["latency"]
    assert lat["float_runtime"] == lat["artifact_runtime"] == "litert" and "tflite-fp32" in lat["baseline"]
    assert lat["other_baselines"]["onnxruntime-fp32"]["median_ms"] > 0
    assert {r["case"] for r in report["crash_test"]} >= {"black", "nan-input"}
    assert "ONNX artifacts only" in report["layer_error"]["note"]
    validate_report(json.loads((tmp_path / "report.json").read_text()))


def test_one_rule_for_error_figures_everywhere():
    """Report, per-layer SQNR and sensitivity read one ErrorStats: non-finite output scores worst on all."""
    import math

    from irq.sensitivity import metrics as sens
    from irq.verify.metrics import ErrorStats, error

    r = np.ones((4, 3), np.float32)
    bad = r.copy()
    bad[1, 2] = np.nan
    assert error(r, bad) == {"sqnr_db": -math.inf, "mse": math.inf, "cosine": -1.0, "max_abs": math.inf}
    assert sens.sqnr([r], [bad], None) == -math.inf and sens.cosine([r], [bad], None) == -1.0
    assert sens.neg_mse([r], [bad], None) == -math.inf
    assert error(r, r)["sqnr_db"] == math.inf and sens.sqnr([r], [r], None) == math.inf
    streamed = ErrorStats().add(r[:2], 0.5 * r[:2]).add(r[2:], 0.5 * r[2:]).result()
    assert streamed == error(r, 0.5 * r) and abs(streamed["sqnr_db"] - 10 * math.log10(4)) < 1e-9


def test_bench_times_artifacts_against_float_and_the_first_one(compiled, fashion_model, small_test, capsys):
    _, out = compiled
    artifact = str(out / "model.onnx")
    assert main(["bench", str(fashion_model), artifact, artifact, "--data", str(small_test), "--runs", "6",
                 "--rounds", "2", "--warmup", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    float_row, first, second = result["rows"]
    assert float_row["runtime"] == first["runtime"] == "onnxruntime" and first["runs"] == 6
    assert first["speedup_vs_float"] == pytest.approx(float_row["median_ms"] / first["median_ms"])
    assert second["speedup_vs_first"] == pytest.approx(first["median_ms"] / second["median_ms"])
    assert "speedup_vs_first" not in float_row and result["data"].endswith("test300.npz")


def test_bench_without_data_feeds_a_synthetic_sample_and_names_a_missing_artifact(compiled, fashion_model,
                                                                                 tmp_path, capsys):
    _, out = compiled
    assert main(["bench", str(fashion_model), str(out / "model.onnx"), "--runs", "2", "--rounds", "1"]) == 0
    assert "synthetic" in capsys.readouterr().out
    assert main(["bench", str(fashion_model), str(tmp_path / "nope.tflite")]) == 2
    assert "nope.tflite: artifact not found" in capsys.readouterr().err


def test_an_artifact_that_answers_differently_twice_is_flagged(fashion_model, small_test):
    """A runtime that reads stale memory (found on a real int8 artifact in onnxruntime) is said, not averaged away."""
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.data.conform import conform
    from irq.frontends import import_model
    from irq.verify.checks import repeat_warnings
    from irq.verify.run import run_dataset

    data = conform(load_data(small_test), import_model(fashion_model).graph, "evaluation").head(16)
    steady = OnnxRunner(Path(fashion_model).read_bytes())
    out = run_dataset(steady, data)
    assert repeat_warnings(steady, data, out, list(steady.output_names)) == []

    class Drifting(OnnxRunner):
        calls = 0

        def run(self, feeds):
            Drifting.calls += 1
            return [o + Drifting.calls for o in super().run(feeds)]

    drifting = Drifting(Path(fashion_model).read_bytes())
    out = run_dataset(drifting, data)
    warning, = repeat_warnings(drifting, data, out, list(drifting.output_names))
    assert warning.startswith("nondeterministic: the onnxruntime artifact") and "vary between runs" in warning
