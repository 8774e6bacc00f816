"""Calibration and evaluation data: the DataSet, loading (.npz, image folders), checks against the model.

- ``dataset``: the DataSet (rows, labels, batch axes, feeds in batches);
- ``npz``: .npz files, read lazily from disk; ``save_npz`` writes atomically;
- ``images``: a folder of images (optionally one subfolder per class) resized for a model;
- ``conform``: data checked against a model's inputs (names, dtypes, shapes, finite values).
"""

from __future__ import annotations

from pathlib import Path

from irq.data.dataset import LABEL_KEY, DataSet
from irq.data.npz import NpyMember, StoredData, load_npz, save_npz
from irq.errors import DataError

__all__ = ["LABEL_KEY", "DataSet", "NpyMember", "StoredData", "load_data", "load_npz", "save_npz"]


def load_data(spec: str | Path | DataSet, **image_options: object) -> DataSet:
    """Load data from an .npz file or an image folder (see ``irq.data.images``)."""
    if isinstance(spec, DataSet):
        return spec
    path = Path(spec)
    if path.is_dir():
        from irq.data.images import load_image_folder

        return load_image_folder(path, **image_options)  # type: ignore[arg-type]
    if path.suffix == ".npz" or not path.suffix:
        return load_npz(path)
    raise DataError(f"{path}: unsupported data format (use .npz or a folder of images)")
