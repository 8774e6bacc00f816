"""TFLite's 16x8 scheme (int16 activations, int8 weights) as a target and as the budget search's alternative."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import irq
from irq.pipeline.targets import get_target
from irq.sensitivity.mixed import FLOAT_COST_FOR_16X8, _float_layers_too_costly, _sixteen_by_eight
from irq.sensitivity.units import Unit
from irq.zoo import calibration_data, eval_data


def _tensor_types(path: Path) -> set[str]:
    from irq.backends.tflite.flatmodel import FlatModel

    flat = FlatModel(path.read_bytes())
    return {flat.type_name(i) for i in flat.activations()}


@pytest.mark.slow
def test_fashion_cnn_in_16x8_runs_in_litert_and_answers_at_least_as_int8_does(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    calib, data = calibration_data("fashion-cnn", 128), eval_data("fashion-cnn")
    reports = {t: irq.compile("fashion-cnn", t, tmp_path / t, calib=calib, eval=data, measure_latency=False)
               for t in ("tflite-int8", "tflite-int16x8")}
    sixteen = Path(reports["tflite-int16x8"]["artifact"])
    interpreter = Interpreter(str(sixteen))
    assert {d["dtype"] for d in interpreter.get_input_details() + interpreter.get_output_details()} == {np.int16}
    assert "INT16" in _tensor_types(sixteen) and "FLOAT32" not in _tensor_types(sixteen)
    agree = {t: r["agreement"]["top1"] for t, r in reports.items()}
    assert agree["tflite-int16x8"] >= max(agree["tflite-int8"], 0.99), agree
    sizes = {t: r["size_bytes"]["artifact"] for t, r in reports.items()}
    assert sizes["tflite-int16x8"] <= 1.1 * sizes["tflite-int8"]  # int8 weights: the size of int8


def test_the_16x8_alternative_exists_only_for_tflite_int8():
    assert _sixteen_by_eight(get_target("tflite-int8")).options["activations"] == "int16"
    for name in ("onnx-int8", "tflite-fp16", "coreml-w8a8", "tflite-int16x8"):
        assert _sixteen_by_eight(get_target(name)) is None


def test_16x8_is_tried_when_int8_misses_or_its_float_layers_cost_too_much():
    class Points:
        def __init__(self, plain: int, chosen: int) -> None:
            self.points = {frozenset(): {"size_bytes": plain}, frozenset({"a"}): {"size_bytes": chosen}}

    kept = [Unit("a", "Conv", ("a",), "a_out", 10, 40)]
    assert _float_layers_too_costly(Points(1000, 1000), False, [])  # int8 missed
    assert not _float_layers_too_costly(Points(1000, 1100), True, kept)
    assert _float_layers_too_costly(Points(1000, int(1000 * (1 + FLOAT_COST_FOR_16X8)) + 1), True, kept)
