"""Sensitivity analysis and mixed precision on the real fashion-cnn and its shipped test images.

About 30-70 s on 2 cores (depending on load): each sensitivity run scores 9 layers both ways
in-process (one run uses two spawned workers), the budget searches lower a handful of ONNX
artifacts.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import irq
from irq import zoo
from irq.cli import main
from irq.compiler import compile as compile_model
from irq.errors import BudgetError, InputError
from irq.frontends import import_model
from irq.pipeline.recipe import recipe_from_dict
from irq.pipeline.targets import get_target
from irq.quant.spec import QType
from irq.report.build import validate_report
from irq.sensitivity.analysis import SensitivityOptions, analyze_sensitivity
from irq.sensitivity.candidates import pin
from irq.sensitivity.metrics import Criterion, evaluate_metric
from irq.sensitivity.mixed import SearchOptions
from irq.sensitivity.units import overrides_for

BROKEN = "/features/features.4/Conv"
PER_TENSOR = {"layers": [{"op_type": ".*", "granularity": "per-tensor"}]}


def margin(float_outputs, artifact_outputs, labels):
    """A user metric: mean logit margin of float's class in the artifact (higher is better)."""
    ref, out = float_outputs[0], artifact_outputs[0]
    cls = ref.argmax(axis=1)
    picked = out[np.arange(len(out)), cls]
    others = np.where(np.eye(out.shape[1], dtype=bool)[cls], -np.inf, out).max(axis=1)
    return float(np.mean(picked - others))


def _set(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory, fashion_model):
    """fashion-cnn whose second conv has a dead channel holding one weight 500x the largest.

    The channel's bias keeps it below zero, so the ReLU zeroes it and the float model computes
    exactly what it did; quantized per tensor, the outlier's scale rounds every other weight to 0.
    """
    model = onnx.load(str(fashion_model))
    arrays = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    w, b = arrays["onnx::Conv_43"], arrays["onnx::Conv_44"]
    big = 500 * np.abs(w).max()
    w[0] = 0
    w[0, 0, 0, 0] = big
    b[0] = -1000 * big  # inputs stay far below 1000, so the channel never fires
    _set(model, "onnx::Conv_43", w)
    _set(model, "onnx::Conv_44", b)
    path = tmp_path_factory.mktemp("broken") / "broken.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def broken_result(broken_model):
    data = zoo.eval_data("fashion-cnn", 300)
    return analyze_sensitivity(import_model(broken_model), get_target("onnx-int8"), zoo.calibration_data("fashion-cnn"),
                               data, SensitivityOptions(subset=100, confirm=3, workers=1),
                               recipe_from_dict(PER_TENSOR))


def test_broken_layer_ranks_first_both_ways(broken_result):
    top = broken_result.rows[0]
    assert top["layer"] == BROKEN
    assert top["rank_alone"] == 1 and top["rank_all_but_one"] == 1
    assert top["confirmed"] and top["gain_full"]["sqnr"] > 10  # keeping it float fixes most of the damage
    assert [r["rank"] for r in broken_result.rows] == list(range(1, len(broken_result.rows) + 1))
    assert {r["layer"] for r in broken_result.rows} >= {"/features/features.0/Conv", "/classifier/classifier.4/Gemm"}
    assert broken_result.samples == {"subset": 100, "full": 128}  # the confirmation reads 128 spread samples


def test_one_pass_layer_errors_find_the_broken_layer(broken_result):
    by_layer = {r["layer"]: r["layerwise"] for r in broken_result.rows}
    assert by_layer["/features/features.0/Conv"]["sqnr_db"] > 20
    assert by_layer[BROKEN]["sqnr_db"] < 3
    # The damage is first visible at the broken layer's output, not before it.
    assert by_layer[BROKEN]["sqnr_db"] < by_layer["/features/features.3/MaxPool"]["sqnr_db"] - 15


def test_metrics_and_criteria():
    ref = [np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])]
    out = [np.array([[2.0, 1.5], [1.0, 0.5], [1.0, 0.2]])]
    labels = np.array([0, 1, 1])
    assert evaluate_metric("top1", ref, out, labels) == pytest.approx(100 * (1 / 3 - 2 / 3))
    assert evaluate_metric("agreement", ref, out, None) == pytest.approx(2 / 3)
    assert evaluate_metric("mse", ref, ref, None) == 0.0 and evaluate_metric("mse", ref, out, None) < 0
    assert evaluate_metric("sqnr", ref, ref, None) == float("inf")
    assert evaluate_metric("test_sensitivity:margin", ref, ref, None) == pytest.approx(5 / 3)
    with pytest.raises(InputError, match="needs labelled"):
        evaluate_metric("top1", ref, out, None)
    with pytest.raises(InputError, match="cannot be loaded"):
        evaluate_metric("no_such_module:f", ref, out, None)
    assert Criterion.from_flags(budget=0.5) == Criterion("top1", -0.5)
    assert Criterion("top1", -0.5).met(-0.4) and not Criterion("top1", -0.5).met(-0.6)
    with pytest.raises(InputError, match="only one"):
        Criterion.from_flags(budget=0.5, min_agreement=0.9)
    with pytest.raises(InputError, match="needs --metric"):
        Criterion.from_flags(min_metric=3.0)


@pytest.fixture(scope="module")
def int4_target():
    """onnx-int8 with int4 weights on every layer: per-tensor, plain quantization misses a 0.5 pt budget."""
    t = get_target("onnx-int8")
    return dataclasses.replace(t, scheme=dataclasses.replace(t.scheme, weight=QType.INT4, int4_min_fan_in=0))


def test_budget_search_meets_the_budget_on_the_artifact(tmp_path, int4_target, fashion_calib, fashion_test):
    recipe = recipe_from_dict(PER_TENSOR)
    search = SearchOptions(SensitivityOptions(subset=100, confirm=2, workers=1), max_evals=8)
    report = compile_model("fashion-cnn", int4_target, tmp_path, criterion=Criterion("top1", -0.5),
                                 calib=fashion_calib, eval=fashion_test, recipe=recipe, search=search,
                                 measure_latency=False)
    mixed = report["mixed_precision"]
    assert mixed["met"] and mixed["plain"]["metric"] < -0.5  # plain int4 misses: the search had work to do
    assert report["accuracy"]["drop_top1_pt"] <= 0.5 + 1e-9  # re-measured on the saved artifact
    assert mixed["chosen"]["metric"] == pytest.approx(-report["accuracy"]["drop_top1_pt"])
    members = {m for layer in mixed["kept_layers"] for m in layer["members"]}
    kept = {x["name"] for x in report["layers"] if x["reason"].startswith("sensitivity")}
    assert members and members <= kept  # plus any MaxPool/ReLU that only fed them
    assert all(x["precision"] == "fp32" for x in report["layers"] if x["name"] in kept)
    # int16 activations cannot mend int4 weights: the search tried them first, then float
    assert [(t["precision"], t["met"]) for t in mixed["precision_tried"]] == [("int16", False), ("fp32", True)]
    validate_report(json.loads((tmp_path / "report.json").read_text()))
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    assert any(p["pareto"] for p in pareto["points"]) and (tmp_path / "pareto.png").stat().st_size > 1000
    # The decisions are data: the written recipe pins them by hand and reproduces the artifact's accuracy.
    again = irq.compile("fashion-cnn", "onnx-int8", tmp_path / "again", calib=fashion_calib, eval=fashion_test,
                        recipe=tmp_path / "mixed_recipe.yaml", measure_latency=False)
    assert {x["name"] for x in again["layers"] if x["precision"] == "fp32"} == kept


def test_unreachable_budget_saves_everything_then_exits_3(tmp_path, fashion_model, fashion_calib, fashion_test,
                                                         capsys):
    out = tmp_path / "out"
    code = main(["compile", str(fashion_model), "-t", "onnx-int8", "--calib", str(fashion_calib), "--eval",
                 str(fashion_test), "--min-metric", "2", "--metric", "cosine", "--workers", "1", "--subset", "100",
                 "--confirm", "0", "--max-evals", "5", "--no-latency", "-o", str(out)])
    assert code == 3
    assert "budget missed" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["mixed_precision"]["met"] is False and any("budget missed" in w for w in report["warnings"])
    assert report["mixed_precision"]["evaluations"] == 5
    assert (out / "model.onnx").stat().st_size > 0 and (out / "mixed_recipe.yaml").exists()
    assert not list(out.glob(".irq-mixed-*"))  # scratch artifacts cleaned up


def test_unreachable_budget_raises_budget_error_from_the_api(tmp_path, fashion_calib, fashion_test):
    with pytest.raises(BudgetError, match="no assignment met cosine >= 2"):
        compile_model("fashion-cnn", "onnx-int8", tmp_path, criterion=Criterion("cosine", 2.0),
                            calib=fashion_calib, eval=fashion_test,
                            search=SearchOptions(SensitivityOptions(subset=100, confirm=0, workers=1), max_evals=3),
                            measure_latency=False)
    assert (tmp_path / "report.json").exists() and (tmp_path / "model.onnx").exists()


def test_cli_sensitivity_with_workers_and_a_user_metric(tmp_path, fashion_model, fashion_calib, fashion_test, capsys):
    code = main(["sensitivity", str(fashion_model), "--calib", str(fashion_calib), "--eval", str(fashion_test),
                 "--metric", "test_sensitivity:margin", "--subset", "64", "--confirm", "2", "--workers", "2",
                 "-o", str(tmp_path)])
    assert code == 0
    assert "9 layers scored both ways" in capsys.readouterr().out
    result = json.loads((tmp_path / "sensitivity.json").read_text())
    assert result["metric"] == "test_sensitivity:margin" and len(result["layers"]) == 9
    assert all("test_sensitivity:margin" in r["alone"] for r in result["layers"])
    header = (tmp_path / "sensitivity.csv").read_text().splitlines()[0].split(",")
    assert {"rank", "layer", "op_type", "params", "bytes", "alone_sqnr", "gain_agreement",
            "layer_sqnr_db"} <= set(header)
    assert (tmp_path / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def test_int16_activations_keep_layers_in_16_bit(fashion_model, fashion_calib):
    data = zoo.eval_data("fashion-cnn", 64)
    options = SensitivityOptions(subset=0, confirm=0, workers=1, high="int16", layerwise=False)
    result = analyze_sensitivity(import_model(fashion_model), get_target("onnx-int8"),
                                 zoo.calibration_data("fashion-cnn"), data, options)
    assert result.high.value == "int16"
    unit = result.units[0]
    proto = pin(result.base, overrides_for([unit], result.high), "insert-qdq").to_proto()
    zero_points = {i.name: i.data_type for i in proto.graph.initializer}
    sixteen = [n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.domain == "com.microsoft"
               and zero_points.get(n.input[2]) == onnx.TensorProto.UINT16]
    assert len(sixteen) == 1  # the kept layer's input, in 16 bits; everything else stays 8-bit
    # 16-bit activations lose less than 8-bit ones: leaving a layer at int16 never costs much SQNR.
    assert max(r["all_but_one"]["sqnr"] for r in result.rows) > result.baseline["subset"]["sqnr"]
    with pytest.raises(InputError, match="only supported for ONNX"):
        analyze_sensitivity(import_model(fashion_model), get_target("tflite-int8"), None, data,
                            SensitivityOptions(high="int16"))


def test_kept_float_layers_stay_float_in_onnxruntime(tmp_path, broken_result):
    """onnxruntime quantizes the weights of a float Conv between Q/DQ pairs unless the plan isolates it."""
    import onnxruntime as ort

    from irq.sensitivity.units import overrides_for

    unit = next(u for u in broken_result.units if u.name == BROKEN)
    for isolate in (True, False):
        model = pin(broken_result.base, overrides_for([unit], broken_result.high), "insert-qdq", isolate=isolate)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(tmp_path / f"optimized_{isolate}.onnx")
        ort.InferenceSession(model.to_bytes(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
        producers = {o: n.op_type for n in optimized.graph.node for o in n.output}
        conv = next(n for n in optimized.graph.node if n.name == BROKEN)
        weight_from_dq = producers.get(conv.input[1]) == "DequantizeLinear"
        assert weight_from_dq is (not isolate)



@pytest.mark.slow
def test_budget_search_keeps_layers_at_int16_where_that_meets_the_budget(tmp_path):
    """MiniLM, static int8: embedding cosine 0.92 plainly, 0.995 with every activation int16."""
    search = SearchOptions(SensitivityOptions(subset=16, confirm=0, workers=1), max_evals=10, full_curve=False)
    report = compile_model("minilm", "onnx-int8", tmp_path, calib=zoo.calibration_data("minilm"),
                           eval=zoo.eval_data("minilm"), criterion=Criterion("cosine", 0.99), search=search,
                           measure_latency=False)
    mixed = report["mixed_precision"]
    assert mixed["met"] and mixed["plain"]["metric"] < 0.99 <= mixed["chosen"]["metric"]
    assert mixed["keep_precision"] == "int16" and [t["precision"] for t in mixed["precision_tried"]] == ["int16"]
    kept = {x["precision"] for x in report["layers"] if x["reason"].startswith("sensitivity")}
    assert kept == {"int16"}
    assert report["error"]["cosine"] >= 0.99  # re-measured on the saved artifact
    assert report["size_bytes"]["artifact"] <= 1.01 * mixed["plain"]["size_bytes"]  # int8 weights stay int8
    assert any(w.startswith("int16-speed:") for w in report["warnings"])  # slow on a CPU: said so


def test_grow_checks_every_layer_first_when_doubling_cannot_reach_it():
    """340 layers, 10 evaluations, only all 340 meet: doubling alone ends at 256 and misses (as ppocr-rec did)."""
    from irq.sensitivity.mixed import _Search

    class Oracle(_Search):
        def __init__(self, max_evals: int, needed: int) -> None:
            self.max_evals, self.needed, self.points = max_evals, needed, {}

        def measure(self, kept):
            key = frozenset(kept)
            self.points.setdefault(key, {"met": len(kept) >= self.needed})
            return self.points[key]

    order = list(range(340))
    assert Oracle(10, 340).grow(order) == 340
    found = Oracle(10, 300).grow(order)
    assert found is not None and 300 <= found < 340  # bisection used what was left
    assert Oracle(10, 341).grow(order) is None  # nothing meets: said after two evaluations
    assert Oracle(30, 5).grow(order) == 5  # with evaluations to spare, doubling finds small answers


def test_candidates_run_downstream_of_their_change_score_as_the_whole_candidates(broken_model):
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.quant.spec import Precision
    from irq.sensitivity.candidates import calibrate_once, proxy_suffix, split_pipeline
    from irq.sensitivity.downstream import SharedPrefix, SuffixRunner, split
    from irq.sensitivity.units import find_units
    from irq.verify.run import run_dataset, run_together

    target, data = get_target("onnx-int8"), zoo.eval_data("fashion-cnn", 40)
    base = calibrate_once(import_model(broken_model), target, zoo.calibration_data("fashion-cnn"),
                          recipe_from_dict(PER_TENSOR))
    suffix = proxy_suffix(split_pipeline(target)[1])
    units = find_units(base)
    every = overrides_for(units, Precision.FP32)
    for reference, members, isolate in ((every, [{k: v for k, v in every.items() if k not in u.members}
                                                 for u in units], False),
                                        ({}, [overrides_for([u], Precision.FP32) for u in units], True)):
        ref = pin(base, reference, suffix, isolate=isolate).to_proto()
        candidates = [pin(base, m, suffix, isolate=isolate).to_proto() for m in members]
        parts = [split(c, ref) for c in candidates]
        assert any(len(p.model.graph.node) < len(c.graph.node) / 2 for p, c in zip(parts, candidates, strict=True))
        prefix = SharedPrefix(ref, parts, 1)
        together = run_together([SuffixRunner(prefix, p, 1) for p in parts], data, batch_size=16)
        for c, got in zip(candidates, together, strict=True):
            whole = run_dataset(OnnxRunner(c.SerializeToString(), 1), data, batch_size=16)
            np.testing.assert_allclose(got[0], whole[0], rtol=1e-5, atol=1e-5)
