"""Every entry point (compile, the budget search, batch, QAT) reports through the same stages.

The same model and data give reports with the same sections; each entry point only adds its
own (``mixed_precision``, ``batch``, ``qat``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import irq
from irq import zoo
from irq.batch import BatchOptions, run_batch
from irq.data import load_npz, save_npz
from irq.qat import QATOptions, qat_compile
from irq.sensitivity.analysis import SensitivityOptions
from irq.sensitivity.metrics import Criterion
from irq.sensitivity.mixed import SearchOptions
from irq.verify.checks import VerifyOptions

OWN = {"mixed_precision", "batch", "qat", "wall_seconds", "warnings"}
CHECKS = VerifyOptions(measure_latency=False, layer_samples=32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one-driver")
    calib, test = zoo.calibration_data("fashion-cnn"), zoo.eval_data("fashion-cnn")
    save_npz(folder / "calib.npz", calib.take(np.arange(200)))
    save_npz(folder / "eval.npz", test.take(np.arange(200)))
    return folder


@pytest.mark.slow
def test_every_entry_point_reports_the_same_sections(tmp_path, data):
    calib, test = data / "calib.npz", data / "eval.npz"
    plain = irq.compile("fashion-cnn", "onnx-int8", tmp_path / "compile", calib=calib, eval=test, checks=CHECKS)
    search = SearchOptions(SensitivityOptions(subset=32, confirm=1, workers=1), max_evals=3, full_curve=False)
    budget = irq.compile("fashion-cnn", "onnx-int8", tmp_path / "budget", calib=calib, eval=test, checks=CHECKS,
                         criterion=Criterion("top1", -2.0), search=search)
    manifest = tmp_path / "batch.yaml"
    manifest.write_text(f"models:\n  - model: fashion-cnn\n    calib: {calib}\n    eval: {test}\n"
                        "    targets: [onnx-int8]\n    latency: false\n")
    run_batch(manifest, tmp_path / "batch", BatchOptions(workers=0))
    batch = json.loads((tmp_path / "batch" / "fashion-cnn" / "onnx-int8" / "report.json").read_text())
    qat = qat_compile("fashion-cnn", "onnx-int8", tmp_path / "qat", load_npz(calib), eval_data=load_npz(test),
                      calib=load_npz(calib), options=QATOptions(epochs=1, max_steps=2), baseline=False)
    sections = {name: set(r) - OWN for name, r in
                (("compile", plain), ("budget", budget), ("batch", batch), ("qat", qat))}
    assert {"crash_test", "layer_error", "accuracy", "error", "layers"} <= sections["compile"]
    for name, keys in sections.items():
        missing, extra = sections["compile"] - keys, keys - sections["compile"]
        assert not missing and not extra, f"{name}: missing {missing}, extra {extra}"
    for folder in ("compile", "budget", "qat"):
        assert (tmp_path / folder / "report.html").exists()
    assert (tmp_path / "batch" / "fashion-cnn" / "onnx-int8" / "report.html").exists()
