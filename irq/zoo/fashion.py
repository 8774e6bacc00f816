"""Fashion-MNIST: the shipped CNN, its shipped samples, and the full set from the Debian package.

Preprocessing (the same for training, calibration and evaluation): grey levels 0-255 divided
by 255, then ``(x - MEAN) / STD`` with the training set's mean and standard deviation, as
float32 arrays of shape (N, 1, 28, 28).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from irq.data import DataSet, load_npz
from irq.errors import DataError

MEAN = 0.2860
STD = 0.3530
DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DATA_DIR = Path(__file__).parent / "data"
ONNX_PATH = DATA_DIR / "fashion_cnn.onnx"
TEST_SUBSET = DATA_DIR / "fashion_test_1000.npz"
CALIB_SUBSET = DATA_DIR / "fashion_calib_500.npz"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
PREPROCESSING = (f"grey 0-255 -> x/255 -> (x - {MEAN}) / {STD}; float32 NCHW (N, 1, 28, 28); "
                 f"labels int64 0-9 ({', '.join(CLASSES)})")


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped) of unsigned bytes into an array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: unreadable idx file ({e})") from e
    magic = int.from_bytes(raw[0:4], "big")
    if magic >> 8 != 0x08:
        raise DataError(f"{path}: not an unsigned-byte idx file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: {data.size} bytes for shape {shape}")
    return data.reshape(shape)


def _find(split: str, kind: str) -> Path:
    """The idx file for ``split`` ("train" or "t10k") and ``kind`` ("images" or "labels")."""
    ndim = 3 if kind == "images" else 1
    stem = f"{split}-{kind}-idx{ndim}-ubyte"
    for name in (f"{stem}.gz", stem, f"{split}-{kind}.idx{ndim}-ubyte"):
        if (DATASET_DIR / name).exists():
            return DATASET_DIR / name
    raise DataError(f"Fashion-MNIST {split} {kind} not found under {DATASET_DIR}; "
                    f"install the Debian package: apt-get install {DEBIAN_PACKAGE}")


def load_raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of ``split``: "train" or "test"."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"Fashion-MNIST split {split!r} unknown (use 'train' or 'test')")
    images = _read_idx(_find(prefix, "images"))
    labels = _read_idx(_find(prefix, "labels")).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) grey images -> normalised float32 (N, 1, 28, 28)."""
    x = images.astype(np.float32)[:, None] / np.float32(255.0)
    return (x - np.float32(MEAN)) / np.float32(STD)


def calibration_data() -> DataSet:
    """The 500 shipped training images (labelled)."""
    return _shipped(CALIB_SUBSET)


def eval_data(full: bool = False) -> DataSet:
    """The 1,000 shipped test images, or with ``full`` the 10,000 from the Debian package."""
    if not full:
        return _shipped(TEST_SUBSET)
    images, labels = load_raw("test")
    return DataSet({"input": preprocess(images)}, labels, f"{DATASET_DIR} (test, 10k)")


def _shipped(path: Path) -> DataSet:
    """A shipped .npz subset, with its ``x`` array renamed to the model input ``input``."""
    data = load_npz(path)
    if set(data.inputs) != {"x"}:
        raise DataError(f"{path}: expected one array 'x', found {sorted(data.inputs)}")
    return DataSet({"input": data.inputs["x"]}, data.labels, data.source)
