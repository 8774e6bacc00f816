"""Natural photos that install with common Python packages, and random crops of them.

The photos come from scikit-image (``skimage.data``), scikit-learn (``load_sample_image``) and
matplotlib (``cbook.get_sample_data``); none needs a network. Grey photos are repeated into
three channels. They are split BY PHOTO into a calibration group and an evaluation group, so
no photo contributes crops to both.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from irq.errors import DataError

CALIBRATION_PHOTOS = ("astronaut", "coffee", "rocket", "china", "hubble_deep_field",
                      "immunohistochemistry", "camera", "coins", "grass", "brick")
EVAL_PHOTOS = ("chelsea", "motorcycle", "flower", "grace_hopper", "retina", "moon", "gravel",
               "clock", "cell")


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image
    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)
    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib import cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data(filename, asfileobj=False)) as im:
            return np.asarray(im.convert("RGB"))
    return load


_LOADERS: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    **{n: ("scikit-image", _skimage(n)) for n in (
        "astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera",
        "coins", "grass", "brick", "chelsea", "retina", "moon", "gravel", "clock", "cell")},
    "motorcycle": ("scikit-image", _skimage("stereo_motorcycle")),
    "china": ("scikit-learn", _sklearn("china.jpg")),
    "flower": ("scikit-learn", _sklearn("flower.jpg")),
    "grace_hopper": ("matplotlib", _matplotlib("grace_hopper.jpg")),
}


def photo_names() -> list[str]:
    """Every photo name, calibration group first."""
    return [*CALIBRATION_PHOTOS, *EVAL_PHOTOS]


def load_photo(name: str) -> np.ndarray:
    """The photo ``name`` as an RGB uint8 array (H, W, 3)."""
    if name not in _LOADERS:
        raise DataError(f"unknown photo {name!r}; known: {', '.join(photo_names())}")
    package, loader = _LOADERS[name]
    try:
        image = np.asarray(loader())
    except ImportError as e:
        raise DataError(f"photo {name!r} needs the Python package {package} ({e})") from e
    except (OSError, ValueError) as e:
        raise DataError(f"photo {name!r} from {package} could not be read ({e})") from e
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of an RGB uint8 image to (size, size)."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def center_crop(image: np.ndarray, size: int, fraction: float = 0.875) -> np.ndarray:
    """The central square covering ``fraction`` of the shorter side, resized to (size, size)."""
    h, w = image.shape[:2]
    side = max(1, round(min(h, w) * fraction))
    top, left = (h - side) // 2, (w - side) // 2
    return _resize(image[top:top + side, left:left + side], size)


def _random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 10-100% of the area, aspect 3/4-4/3, resized, flipped half the time."""
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(0.10, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch, cw = round(np.sqrt(area / aspect)), round(np.sqrt(area * aspect))
        if 0 < ch <= h and 0 < cw <= w:
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = _resize(image[top:top + ch, left:left + cw], size)
            break
    else:
        crop = center_crop(image, size, 1.0)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def crop_sources(photos: tuple[str, ...], count: int) -> list[str]:
    """The photo each of the first ``count`` crops of :func:`crops` is cut from."""
    return [photos[i % len(photos)] for i in range(count)]


def crops(photos: tuple[str, ...], count: int, size: int, seed: int) -> np.ndarray:
    """``count`` deterministic crops (count, size, size, 3) uint8 of ``photos``, interleaved.

    Crop ``i`` comes from ``photos[i % len(photos)]``, so any prefix covers every photo. The
    first crop of each photo is its centre crop; the others are random-resized crops drawn
    from a generator seeded with ``seed``.
    """
    images = [load_photo(name) for name in photos]
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        image = images[i % len(images)]
        out[i] = center_crop(image, size) if i < len(images) else _random_crop(image, size, rng)
    return out
