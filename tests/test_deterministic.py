"""Every target's artifact is the same byte for byte across compiles: in one process and in another."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import irq
from irq.data import save_npz
from irq.pipeline.targets import TARGETS
from irq.zoo import calibration_data

pytestmark = pytest.mark.slow


def _digest(artifact: Path) -> dict[str, str]:
    """A hash per file of the artifact (a .mlpackage is a folder), with a sidecar if it has one."""
    files = [artifact] if artifact.is_file() else sorted(f for f in artifact.rglob("*") if f.is_file())
    files += [f for f in artifact.parent.glob(artifact.name + ".*") if f.is_file()]
    return {str(f.relative_to(artifact.parent)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _compile(target: str, out: Path) -> dict[str, str]:
    report = irq.compile("fashion-cnn", target, out, calib=calibration_data("fashion-cnn", 64),
                         measure_latency=False)
    return _digest(Path(report["artifact"]))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_two_compiles_in_one_process_write_the_same_bytes(tmp_path, target):
    """Keras numbers its models per process and coremltools draws UUIDs: neither may reach the artifact."""
    assert _compile(target, tmp_path / "a") == _compile(target, tmp_path / "b")


@pytest.mark.parametrize("target", ["onnx-int8", "tflite-int8", "coreml-int8"])
def test_another_process_writes_the_same_bytes(tmp_path, target):
    here = _compile(target, tmp_path / "here")
    save_npz(tmp_path / "calib.npz", calibration_data("fashion-cnn", 64))
    subprocess.run([sys.executable, "-m", "irq.cli", "compile", "fashion-cnn", "-t", target, "--calib",
                    str(tmp_path / "calib.npz"), "-o", str(tmp_path / "there"), "--no-latency"],
                   check=True, capture_output=True, env={"PYTHONHASHSEED": "12345", **_env()})
    import json

    artifact = Path(json.loads((tmp_path / "there" / "report.json").read_text())["artifact"])
    assert _digest(artifact) == here


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
