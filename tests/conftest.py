"""Shared fixtures: tiny models built with torch, the shipped fashion-cnn and its data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ZOO_DATA = Path(__file__).resolve().parent.parent / "irq" / "zoo" / "data"


def _tiny_cnn():
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1, groups=1), torch.nn.ReLU6(),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture(scope="session")
def tiny_cnn_proto() -> onnx.ModelProto:
    """A small conv net (BN, ReLU, ReLU6, depthwise, pooling, linear) exported by torch."""
    import torch

    from irq.frontends.torch_module import export_torch

    return export_torch(_tiny_cnn(), torch.randn(1, 3, 16, 16), output_names=["logits"])


@pytest.fixture(scope="session")
def tiny_cnn_path(tmp_path_factory, tiny_cnn_proto) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny_cnn.onnx"
    onnx.save(tiny_cnn_proto, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Calibration/eval data for the tiny CNN (normal noise, no labels)."""

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 3, 16, 16)).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x=x)
    return path


@pytest.fixture(scope="session")
def fashion_model() -> Path:
    return ZOO_DATA / "fashion_cnn.onnx"


@pytest.fixture(scope="session")
def fashion_calib() -> Path:
    return ZOO_DATA / "fashion_calib_500.npz"


@pytest.fixture(scope="session")
def fashion_test() -> Path:
    return ZOO_DATA / "fashion_test_1000.npz"


def run_onnx(model: onnx.ModelProto | bytes | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a model in onnxruntime (helper for numeric checks)."""
    from irq.ir.ort import make_session

    session = make_session(model, threads=1)
    return session.run(None, feeds)


def _zoo_digests() -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ZOO_DATA.iterdir()) if p.is_file()}


@pytest.fixture(scope="session", autouse=True)
def shipped_files_stay_untouched():
    """irq never modifies its inputs: the shipped zoo files must be byte-identical after the run."""
    before = _zoo_digests()
    yield
    changed = [name for name, digest in _zoo_digests().items() if before.get(name) != digest]
    assert not changed, f"tests modified shipped zoo files: {changed}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With IRQ_NO_SKIPS=1 (CI sets it: CI has every extra), a skipped test fails instead of hiding."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("IRQ_NO_SKIPS") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and IRQ_NO_SKIPS=1 forbids skips: {reason}"
