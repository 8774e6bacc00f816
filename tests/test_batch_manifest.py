"""Batch manifest validation: layering, YAML/TOML, and errors naming file, entry and key (~2 s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from irq.batch import Budgets, load_manifest
from irq.batch.summary import check_budgets
from irq.errors import InputError


def _write(tmp_path: Path, text: str, name: str = "batch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "m.onnx").write_bytes(b"not checked until a job runs")
    np.savez(tmp_path / "calib.npz", x=np.zeros((4, 1, 28, 28), np.float32))
    (tmp_path / "recipe.yaml").write_text("calibration: percentile\npercentile: 99.9\n")
    return tmp_path


def test_layers_defaults_entry_override(files: Path) -> None:
    m = load_manifest(_write(files, """
defaults:
  targets: [onnx-int8, onnx-fp16]
  calib: calib.npz
  calib_samples: 2
  budgets: {max_size_ratio: 0.5, min_agreement: 0.9}
  latency: false
models:
  - model: m.onnx
    recipe: recipe.yaml
    budgets: {min_agreement: null, min_sqnr: 30}
    overrides:
      onnx-fp16: {latency: true, recipe: null, pipeline: "shape-inference,to-fp16"}
  - model: fashion-cnn
    targets: [onnx-dynamic]
    eval: "zoo:"
"""))
    assert [j.label for j in m.jobs] == ["m/onnx-int8", "m/onnx-fp16", "fashion-cnn/onnx-dynamic"]
    int8, fp16, dyn = (j.settings for j in m.jobs)
    assert int8.calib is not None and int8.calib.path == files / "calib.npz" and int8.calib.samples == 2
    assert int8.recipe is not None and int8.recipe.percentile == 99.9 and not int8.latency
    assert int8.budgets == Budgets(max_size_ratio=0.5, min_sqnr=30.0)  # null unset min_agreement
    assert fp16.recipe is None and fp16.latency and fp16.pipeline == "shape-inference,to-fp16"
    assert dyn.eval is not None and dyn.eval.zoo == "fashion-cnn"
    assert m.jobs[0].model.kind == "onnx" and m.jobs[2].model.kind == "zoo"


def test_toml_manifest(files: Path) -> None:
    m = load_manifest(_write(files, """
[defaults]
targets = ["onnx-fp16"]

[[models]]
model = "m.onnx"
name = "first"

[[models]]
model = "pkg.mod:build"
recipe = { layers = [{ name = "^/fc", precision = "fp32" }] }
""", "batch.toml"))
    assert [j.label for j in m.jobs] == ["first/onnx-fp16", "build/onnx-fp16"]
    assert m.jobs[1].model.kind == "callable"
    assert m.jobs[1].settings.recipe is not None and m.jobs[1].settings.recipe.layers[0].precision == "fp32"


@pytest.mark.parametrize(("body", "expected"), [
    ("models: [{model: m.onnx, targets: [onnx-fp16], recipes: x}]", r"models\[0\] \(m\): unknown key 'recipes'"),
    ("modles: []", r"unknown key 'modles'"),
    ("models: [{model: m.onnx, targets: [onnx-int9]}]", r"models\[0\] \(m\)\.targets: unknown target 'onnx-int9'"),
    ("models: [{model: missing.onnx, targets: [onnx-fp16]}]", r"models\[0\]\.model: .*missing\.onnx not found"),
    ("models: [{model: m.onnx, targets: [onnx-int8], calib: nope.npz}]", r"models\[0\] \(m\)\.calib: .*nope\.npz"),
    ("models: [{model: m.onnx, targets: [onnx-int8], calib_samples: ten}]",
     r"calib_samples: expected int, got str"),
    ("models: [{model: m.onnx, targets: [onnx-int8], calib_samples: true}]", r"calib_samples: expected int"),
    ("models: [{model: m.onnx, targets: [onnx-fp16], latency: 'yes'}]", r"\.latency: expected bool"),
    ("models: [{model: m.onnx, targets: onnx-fp16}]", r"\.targets: expected list"),
    ("models: [{model: m.onnx, targets: [onnx-fp16], budgets: {max_size: 1}}]", r"\.budgets: unknown key 'max_size'"),
    ("models: [{model: m.onnx, targets: [onnx-fp16], budgets: {min_sqnr: high}}]",
     r"budgets\.min_sqnr: expected a number"),
    ("models: [{model: m.onnx, targets: [onnx-int8], pipeline: 'calibrate{methd=mse}'}]",
     r"\.pipeline: .*no option 'methd'"),
    ("models: [{model: m.onnx, targets: [onnx-int8], disable_passes: [fold-everything]}]",
     r"disable_passes: unknown pass 'fold-everything'"),
    ("models: [{model: m.onnx, targets: [onnx-fp16], overrides: {onnx-int8: {latency: false}}}]",
     r"overrides\.onnx-int8: 'onnx-int8' is not one of this entry's targets"),
    ("models: [{model: m.onnx, targets: [onnx-fp16], recipe: {activation: int3}}]", r"\.recipe: .*int3"),
    ("models: [{model: m.onnx, targets: [onnx-fp16]}, {model: m.onnx, targets: [onnx-int8]}]",
     r"models\[1\]: name 'm' is already used by models\[0\]"),
    ("models: [{model: m.onnx, targets: [onnx-int8], calib: 'zoo:'}]", r"calib: 'zoo:' .* needs a zoo model"),
    ("models: [{model: m.onnx}]", r"models\[0\] \(m\): no 'targets'"),
    ("models: [{model: no-such-zoo-model, targets: [onnx-fp16]}]", r"not an \.onnx file, module:function or zoo"),
    ("models: []", r"'models' lists no models"),
    ("models: [{model: m.onnx, targets: [onnx-fp16]", r"not valid YAML"),
])
def test_errors_name_file_entry_and_key(files: Path, body: str, expected: str) -> None:
    path = _write(files, body)
    with pytest.raises(InputError, match=expected) as info:
        load_manifest(path)
    assert str(info.value).startswith(str(path))


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read manifest"):
        load_manifest(tmp_path / "none.yaml")


def test_budgets_checked_against_the_report() -> None:
    report = {"size_bytes": {"float": 100, "artifact": 27, "ratio": 0.27}, "agreement": {"top1": 0.97, "top5": 1.0},
              "accuracy": {"drop_top1_pt": 0.4}, "error": {"sqnr_db": 31.0, "cosine": 0.999, "mse": 0.1}}
    assert check_budgets(Budgets(), report) == ("none", [])
    assert check_budgets(Budgets(max_drop=0.5, max_size_ratio=0.3), report) == ("met", [])
    status, misses = check_budgets(Budgets(min_agreement=0.98, min_speedup=1.0, max_size_ratio=0.25), report)
    assert status == "missed" and len(misses) == 3
    assert misses[0].startswith("min_agreement: missed: 0.97")
    assert misses[1].startswith("max_size_ratio: missed: 0.27")
    assert misses[2].startswith("min_speedup: not measured")
