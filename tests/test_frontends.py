"""Frontends: PyTorch callables and Keras models arrive as the same IR and quantize the same way."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_onnx

import irq
from irq.cli import main


def build_tiny_torch():
    """A ``package.module:function`` model source for the CLI test."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    return net, torch.randn(1, 12)


def test_torch_callable_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    assert main(["compile", "test_frontends:build_tiny_torch", "-t", "onnx-fp32", "-o", str(tmp_path)]) == 0
    net, x = build_tiny_torch()
    out = run_onnx(str(tmp_path / "model.onnx"), {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, net(x).detach().numpy(), atol=1e-5)


@pytest.mark.slow
def test_keras_model_file_quantizes(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    inp = tf_keras.Input((8, 8, 3), name="image")
    x = tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(5)(x))
    path = tmp_path / "tiny.keras"
    model.save(path)
    data = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=data)
    report = irq.compile(path, "onnx-int8", tmp_path / "out", calib=tmp_path / "calib.npz",
                         eval=tmp_path / "calib.npz", measure_latency=False)
    assert report["error"]["cosine"] > 0.99
    ref = model.predict(data[:4], verbose=0)
    got = run_onnx(str(tmp_path / "out" / "model.onnx"), {"image": data[:4]})[0]
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()
