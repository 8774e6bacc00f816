"""Image-folder data: one subfolder per class (labels) or a flat folder (no labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from irq.data.dataset import DataSet
from irq.errors import DataError

_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def _parse_floats(text: str | tuple[float, ...] | None, n: int, default: float) -> np.ndarray:
    if text is None:
        return np.full(n, default, dtype=np.float32)
    values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    if len(values) not in (1, n):
        raise DataError(f"expected 1 or {n} values, got {values}")
    return np.resize(np.asarray(values, dtype=np.float32), n)


def load_image(path: Path, size: int, crop: int, channels: int) -> np.ndarray:
    """Resize the short side to ``size``, centre-crop ``crop`` x ``crop``; HWC float32 in [0, 255]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            img = opened.convert("L" if channels == 1 else "RGB")
            w, h = img.size
            scale = size / min(w, h)
            img = img.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.Resampling.BILINEAR)
            w, h = img.size
            left, top = (w - crop) // 2, (h - crop) // 2
            arr = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from e
    return arr[..., None] if arr.ndim == 2 else arr


def load_image_folder(folder: Path, input_name: str = "x", size: int = 256, crop: int = 224,
                      mean: str | None = None, std: str | None = None, scale: float = 1.0,
                      layout: str = "NCHW", channels: int = 3, limit: int | None = None) -> DataSet:
    """Preprocess a folder of images: ``(pixel * scale - mean) / std``, in ``layout``."""
    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files: list[tuple[Path, int]] = []
    if classes:
        for label, c in enumerate(classes):
            files += [(p, label) for p in sorted((folder / c).iterdir()) if p.suffix.lower() in _EXTENSIONS]
    else:
        files = [(p, -1) for p in sorted(folder.iterdir()) if p.suffix.lower() in _EXTENSIONS]
    if limit:
        files = files[:limit]
    if not files:
        raise DataError(f"{folder}: no images found")
    m, s = _parse_floats(mean, channels, 0.0), _parse_floats(std, channels, 1.0)
    batch = np.stack([(load_image(p, size, crop, channels) * scale - m) / s for p, _ in files])
    if layout.upper() == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    elif layout.upper() != "NHWC":
        raise DataError(f"layout must be NCHW or NHWC, not {layout!r}")
    labels = np.array([lbl for _, lbl in files], dtype=np.int64) if classes else None
    return DataSet({input_name: np.ascontiguousarray(batch, dtype=np.float32)}, labels, str(folder))
