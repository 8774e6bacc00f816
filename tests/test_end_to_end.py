"""The whole pipeline on the real trained fashion-cnn and its shipped Fashion-MNIST test images."""

from __future__ import annotations

import json

import pytest

import irq
from irq.cli import main
from irq.report.build import validate_report


@pytest.fixture(scope="module")
def int8_report(tmp_path_factory, fashion_model, fashion_calib, fashion_test):
    out = tmp_path_factory.mktemp("int8")
    return irq.compile(fashion_model, "onnx-int8", out, calib=fashion_calib, eval=fashion_test), out


def test_int8_static_per_channel_holds_accuracy(int8_report):
    report, out = int8_report
    assert report["samples"] == 1000
    acc = report["accuracy"]
    assert acc["float"]["top1"] > 0.88  # the real trained model, not random weights
    assert acc["drop_top1_pt"] <= 0.5
    assert report["agreement"]["top1"] >= 0.98
    assert report["error"]["sqnr_db"] > 15
    assert report["size_bytes"]["artifact"] <= 0.30 * report["size_bytes"]["float"]
    assert {layer["precision"] for layer in report["layers"]} == {"int8"}
    on_disk = json.loads((out / "report.json").read_text())
    validate_report(on_disk)
    assert on_disk["accuracy"]["artifact"] == pytest.approx(report["accuracy"]["artifact"])


def test_each_pass_row_says_what_that_pass_did(int8_report):
    report, _ = int8_report
    did = {row["name"]: row.get("did") for row in report["passes"]}
    qdq = did["insert-qdq"]
    assert qdq["quantized_nodes"] == sum(layer["precision"] == "int8" for layer in report["layers"]) > 0
    assert did["bias-correct"]["layers"] > 0 and did["cleanup"] is None  # cleanup keeps no record
    assert report["calibration"] == {"method": report["scheme"]["calibration"], "samples": 500,
                                     "tensors": report["calibration"]["tensors"]}


def test_fp16_is_nearly_lossless(tmp_path, fashion_model, fashion_test):
    report = irq.compile(fashion_model, "onnx-fp16", tmp_path, eval=fashion_test, measure_latency=False)
    assert abs(report["accuracy"]["drop_top1_pt"]) <= 0.1
    assert report["size_bytes"]["ratio"] < 0.55


def test_verify_recomputes_the_report(int8_report, fashion_model, fashion_test, tmp_path, capsys):
    report, out = int8_report
    code = main(["verify", str(fashion_model), str(out / "model.onnx"), "--eval", str(fashion_test),
                 "-o", str(tmp_path / "v.json"), "--no-latency"])
    assert code == 0
    again = json.loads((tmp_path / "v.json").read_text())
    assert again["accuracy"]["artifact"]["top1"] == pytest.approx(report["accuracy"]["artifact"]["top1"])
    assert "top-1" in capsys.readouterr().out


def test_report_schema_rejects_a_broken_report(int8_report):
    from irq.errors import VerificationError

    report, _ = int8_report
    broken = dict(report, size_bytes={"float": -1, "artifact": 3})
    with pytest.raises(VerificationError, match="size_bytes/float"):
        validate_report(broken)


def test_cli_compile_with_ir_dumps(tmp_path, fashion_model, fashion_calib, capsys):
    code = main(["compile", str(fashion_model), "-t", "onnx-int8-arm", "--calib", str(fashion_calib),
                 "--input-shape", "input=1,1,28,28", "--dump-ir", str(tmp_path / "ir"), "-o", str(tmp_path / "out")])
    assert code == 0
    assert "onnx-int8-arm" in capsys.readouterr().out
    dumps = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert dumps[:2] == ["001_fix-input-shapes.onnx", "002_dequantize.onnx"] and dumps[-1].endswith("_insert-qdq.onnx")
    # input preparation and the pipeline are two pass managers: one numbering runs through both
    assert [int(d[:3]) for d in dumps] == list(range(1, len(dumps) + 1))


def test_cli_audit_json(fashion_model, capsys):
    assert main(["audit", str(fashion_model), "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert [layer["op_type"] for layer in audit["quantizable_layers"]] == ["Conv", "Conv", "Conv", "Gemm", "Gemm"]
    assert audit["parameter_bytes"] > 100_000
