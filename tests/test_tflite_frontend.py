"""A float .tflite as input: imported, quantized, lowered, and verified against the original in LiteRT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import irq
from irq.cli import main


@pytest.fixture(scope="module")
def float_tflite(tmp_path_factory) -> Path:
    """A MediaPipe-shaped float .tflite: NHWC image in, a heatmap and a class distribution out."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    image = tf.keras.Input((24, 24, 3), batch_size=1, name="image")
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(image)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = tf.keras.layers.ReLU(6.0)(x)
    x = tf.keras.layers.Conv2D(16, 1, activation="relu")(x)
    heatmap = tf.keras.layers.Conv2D(2, 1, activation="sigmoid", name="heatmap")(x)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(x)
    probs = tf.keras.layers.Dense(5, activation="softmax", name="probs")(pooled)
    model = tf.keras.Model(image, [heatmap, probs])
    path = tmp_path_factory.mktemp("tflite") / "net.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.fixture(scope="module")
def nhwc_data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "nhwc.npz"
    np.savez(path, image=rng.uniform(0, 1, size=(48, 24, 24, 3)).astype(np.float32))
    return path


def _litert(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def test_tflite_to_full_int8_keeps_nhwc_and_is_checked_against_the_original(tmp_path, float_tflite, nhwc_data,
                                                                             capsys):
    before = float_tflite.read_bytes()
    out = tmp_path / "out"
    code = main(["compile", str(float_tflite), "-t", "tflite-int8", "--calib", str(nhwc_data), "--eval",
                 str(nhwc_data), "-o", str(out), "--no-latency"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["float_reference"] == "litert (the original .tflite)"
    assert report["size_bytes"]["float"] == len(before)  # the baseline is the user's file
    assert report["error"]["sqnr_db"] > 15
    assert set(report["error"]["per_output"]) == {"heatmap", "probs"} or len(report["error"]["per_output"]) == 2
    original, artifact = _litert(float_tflite), _litert(out / "model.tflite")
    assert [list(d["shape"]) for d in artifact.get_input_details()] == [[1, 24, 24, 3]]
    assert sorted(tuple(d["shape"]) for d in artifact.get_output_details()) == \
        sorted(tuple(d["shape"]) for d in original.get_output_details())
    ops = {d["op_name"] for d in artifact._get_ops_details()}
    assert "CONV_2D" in ops and "DEPTHWISE_CONV_2D" in ops
    kernels = [d for d in artifact.get_tensor_details() if d["dtype"] == np.int8 and len(d["shape"]) == 4]
    assert kernels  # int8 weights, not a float model in disguise
    assert float_tflite.read_bytes() == before


def test_tflite_input_compiles_for_onnx_targets(tmp_path, float_tflite, nhwc_data):
    report = irq.compile(float_tflite, "onnx-int8", tmp_path / "out", calib=nhwc_data, eval=nhwc_data,
                         measure_latency=False)
    assert report["error"]["sqnr_db"] > 15
    assert report["agreement"]["top1"] >= 0.9


def test_an_onnx_file_named_tflite_is_refused_in_one_line(tmp_path, capsys, fashion_model):
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(Path(fashion_model).read_bytes())
    assert main(["compile", str(fake), "-t", "tflite-int8", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fake.tflite" in err[0] and "DecodeError" not in err[0]


def test_import_is_byte_identical_across_processes(float_tflite):
    """tf2onnx numbers its folded constants in set order, which follows the hash seed: irq renumbers them."""
    import os
    import subprocess
    import sys

    script = ("import hashlib, sys\nfrom irq.frontends import import_model\n"
              "print(hashlib.sha256(import_model(sys.argv[1]).to_bytes()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", script, str(float_tflite)], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout.split()[-1]
               for seed in ("1", "2", "3")}
    assert len(digests) == 1


def test_budget_artifact_keeps_its_io_sidecar(tmp_path, float_tflite, nhwc_data):
    """The search's chosen .tflite came without model.tflite.json, so verification guessed NCHW for an NHWC
    input and LiteRT failed on MediaPipe's face detector ("XNNPack delegate failed to reshape")."""
    import contextlib

    from irq.backends.tflite import TFLiteBackend
    from irq.errors import BudgetError
    from irq.frontends import import_model
    from irq.sensitivity.metrics import Criterion
    from irq.sensitivity.mixed import SearchOptions

    out = tmp_path / "budget"
    with contextlib.suppress(BudgetError):  # an unreachable bar: the search still saves its best artifact
        irq.compile(float_tflite, "tflite-int8", out, calib=nhwc_data, eval=nhwc_data, measure_latency=False,
                    criterion=Criterion("sqnr", 80.0), search=SearchOptions(max_evals=3, full_curve=False))
    report = json.loads((out / "report.json").read_text())
    assert report["mixed_precision"]["evaluations"] >= 2
    assert (out / "model.tflite.json").exists()
    data = np.load(nhwc_data)["image"][:4]
    backend, reference = TFLiteBackend(), import_model(float_tflite)
    feeds = {reference.graph.inputs[0].name: data}
    with_sidecar = backend.runner(out / "model.tflite", reference).run(feeds)
    (out / "model.tflite.json").unlink()
    guessed = backend.runner(out / "model.tflite", reference).run(feeds)
    for a, b in zip(with_sidecar, guessed, strict=True):
        np.testing.assert_array_equal(a, b)
