"""Bad input: one clear line naming the problem, a non-zero exit, no traceback, input unchanged."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from irq.cli import main


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def _assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def model(tmp_path, tiny_cnn_path) -> Path:
    path = tmp_path / "m.onnx"
    path.write_bytes(tiny_cnn_path.read_bytes())
    return path


def _npz(tmp_path: Path, name: str, **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _good_x(n=8):
    return np.random.default_rng(0).normal(size=(n, 3, 16, 16)).astype(np.float32)


def test_missing_model(capsys, tmp_path):
    missing = str(tmp_path / "nope.onnx")
    _assert_one_line(*_run(capsys, "compile", missing, "-t", "onnx-fp32", "-o", str(tmp_path / "o")),
                     "nope.onnx", "not found")


def test_truncated_and_non_onnx_files(capsys, tmp_path, model):
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    for path in (truncated, text):
        before = _digest(path)
        _assert_one_line(*_run(capsys, "compile", str(path), "-t", "onnx-fp32", "-o", str(tmp_path / "o")),
                         path.name, "not a valid ONNX model")
        assert _digest(path) == before


def test_unsupported_opset(capsys, tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 1, [1, 4])],
                              [helper.make_tensor_value_info("y", 1, [1, 4])])
    path = tmp_path / "future.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)]), str(path))
    _assert_one_line(*_run(capsys, "compile", str(path), "-t", "onnx-fp32", "-o", str(tmp_path / "o")),
                     "future.onnx", "opset 99")


def test_external_data_outside_model_folder(capsys, tmp_path):
    inner = tmp_path / "models"
    inner.mkdir()
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.data_location = onnx.TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 1, [1, 4])],
                              [helper.make_tensor_value_info("y", 1, [1, 4])], [w])
    path = inner / "ext.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    _assert_one_line(*_run(capsys, "audit", str(path)), "'w'", "outside the model's folder")


def test_unknown_target(capsys, tmp_path, model):
    _assert_one_line(*_run(capsys, "compile", str(model), "-t", "onnx-int7", "-o", str(tmp_path / "o")),
                     "unknown target 'onnx-int7'", "onnx-int8")


@pytest.mark.parametrize("arrays, needles", [
    ({"x": np.zeros((0, 3, 16, 16), np.float32)}, ["calibration set is empty"]),
    ({"x": np.where(np.arange(8)[:, None, None, None] == 3, np.nan, _good_x())}, ["NaN/inf", "sample 3"]),
    ({"x": np.full((8, 3, 16, 16), np.inf, np.float32)}, ["NaN/inf"]),
    ({"x": _good_x()[:, :, :8, :8]}, ["axis 2 is 8", "expects 16"]),
    ({"x": _good_x()[:, 0]}, ["expects rank 4"]),
    ({"x": _good_x().astype(np.int32)}, ["dtype int32", "float32"]),
    ({"pixels": _good_x(), "extra": _good_x()}, ["no array for model input 'input'"]),
])
def test_bad_calibration_data(capsys, tmp_path, model, arrays, needles):
    calib = _npz(tmp_path, "calib.npz", **arrays)
    before = _digest(model)
    code, err = _run(capsys, "compile", str(model), "-t", "onnx-int8", "--calib", str(calib), "-o", str(tmp_path / "o"))
    _assert_one_line(code, err, "calib.npz", *needles)
    assert _digest(model) == before


def test_labels_out_of_range(capsys, tmp_path, model):
    calib = _npz(tmp_path, "calib.npz", x=_good_x())
    evaluation = _npz(tmp_path, "eval.npz", x=_good_x(), y=np.array([0, 1, 2, 3, 4, 5, 6, 10]))
    _assert_one_line(*_run(capsys, "compile", str(model), "-t", "onnx-int8", "--calib", str(calib),
                           "--eval", str(evaluation), "-o", str(tmp_path / "o")),
                     "eval.npz", "labels out of range [0, 9]")


def test_unwritable_output_dir(capsys, tmp_path, model):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _assert_one_line(*_run(capsys, "compile", str(model), "-t", "onnx-fp32", "-o", str(blocker / "out")),
                     "a_file/out", "not writable")


@pytest.mark.parametrize("pipeline, needle", [
    ("cleanup,fold-everything", "unknown pass 'fold-everything'"),
    ("calibrate{bins=9}", "no option 'bins'"),
])
def test_bad_pipeline(capsys, tmp_path, model, pipeline, needle):
    calib = _npz(tmp_path, "calib.npz", x=_good_x())
    _assert_one_line(*_run(capsys, "compile", str(model), "-t", "onnx-int8", "--calib", str(calib),
                           "--pipeline", pipeline, "-o", str(tmp_path / "o")), needle)


def test_console_script_exit_code_and_debug_flag(tmp_path):
    cmd = [sys.executable, "-m", "irq.cli", "compile", str(tmp_path / "missing.onnx"), "-t", "onnx-fp32",
           "-o", str(tmp_path / "o")]
    plain = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    debug = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True, check=False)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
