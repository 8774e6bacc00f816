"""QAT results through the TFLite backend: learned ranges must reach the .tflite unchanged.

Runtime: 18 s on 2 cores, 50 s when busy (onnx2tf and the TFLite converter, twice), hence ``slow``.
"""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("onnx2tf") is None:
    pytest.skip("the tflite extra (onnx2tf, tensorflow) is not installed", allow_module_level=True)
torch = pytest.importorskip("torch")

from irq import zoo  # noqa: E402
from irq.qat import QATOptions, qat_compile  # noqa: E402


@pytest.mark.slow
def test_tflite_honours_learned_ranges(tmp_path):
    train = zoo.calibration_data("fashion-cnn")
    test = zoo.eval_data("fashion-cnn", 300)
    report = qat_compile("fashion-cnn", "tflite-int8", tmp_path, train, eval_data=test, calib=train,
                         options=QATOptions(max_steps=8, batch_size=64, learn_ranges=True, range_lr=2e-2))
    q = report["qat"]
    assert q["ranges"]["learned"] and q["ranges"]["max_rel_change_hi"] > 0.01  # moved more than the 0.1% checked below
    fidelity = report["artifact_info"]["range_fidelity"]
    assert fidelity["source"] == "ir" and fidelity["compared"] >= 5
    assert fidelity["scale_ratio"]["min"] >= 0.999 and fidelity["scale_ratio"]["max"] <= 1.001
    assert fidelity["zero_point_max_diff"] == 0
    assert q["accuracy"]["runtime"] == "litert"
    assert abs(q["accuracy"]["qat"] - q["accuracy"]["simulated"]["after"]) <= 0.02
    assert report["agreement"]["top1"] >= 0.97

