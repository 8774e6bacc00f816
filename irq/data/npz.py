"""Reading and writing .npz data; arrays of uncompressed files are read batch by batch from disk.

A large calibration set therefore does not grow the process's memory.
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irq.data.dataset import LABEL_KEY, DataSet
from irq.errors import DataError


class NpyMember:
    """An uncompressed array inside an .npz, read on demand with positional reads.

    Unlike a memory map, rows read here are not left resident in this process, so a large
    calibration set costs no memory beyond the batch being used.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.ndim = len(shape)
        self._row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, start: int, stop: int) -> np.ndarray:
        count = max(stop - start, 0)
        with self.path.open("rb") as f:
            f.seek(self.offset + start * self._row)
            buf = f.read(count * self._row)
        return np.frombuffer(buf, dtype=self.dtype).reshape((count, *self.shape[1:])).copy()

    def __getitem__(self, index: slice | np.ndarray | int) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            rows = self._rows(start, stop)
            return rows[::step] if step != 1 else rows
        if isinstance(index, int | np.integer):
            return self._rows(int(index), int(index) + 1)[0]
        return np.stack([self._rows(int(i), int(i) + 1)[0] for i in np.asarray(index).reshape(-1)])

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        arr = self._rows(0, len(self))
        return arr if dtype is None else arr.astype(dtype)

    def astype(self, dtype: np.dtype) -> np.ndarray:
        """The whole array, converted (reads everything)."""
        return np.asarray(self).astype(dtype)


def _npz_member_lazy(path: Path, zf: zipfile.ZipFile, member: str) -> NpyMember | None:
    """A lazy reader for an uncompressed .npy member of an .npz; None if it is compressed."""
    info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = np.lib.format._read_array_header(f, version)  # type: ignore[attr-defined]
        offset = f.tell()
    if dtype.hasobject or fortran or not shape:
        return None
    return NpyMember(path, offset, shape, dtype)


def load_npz(path: str | Path) -> DataSet:
    """Load ``x`` (or one key per model input) and optional ``y`` labels from an .npz file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from e
    arrays: dict[str, Any] = {}
    with zf:
        for member in zf.namelist():
            key = member.removesuffix(".npy")
            try:
                arr = _npz_member_lazy(path, zf, member) if member.removesuffix(".npy") != LABEL_KEY else None
                if arr is None:
                    with zf.open(member) as fh:
                        arr = np.lib.format.read_array(fh, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise DataError(f"{path}: array {key!r} is unreadable ({e})") from e
            arrays[key] = arr
    labels = arrays.pop(LABEL_KEY, None)
    if not arrays:
        raise DataError(f"{path}: no input arrays (expected 'x' or one key per model input)")
    return DataSet(arrays, labels, str(path))


def save_npz(path: Path, data: DataSet) -> None:
    """Write a DataSet as an uncompressed .npz (memory-mappable on load), atomically."""
    from irq.io import atomic_path

    arrays = dict(data.inputs)
    if data.labels is not None:
        arrays[LABEL_KEY] = np.asarray(data.labels)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)


@dataclass(frozen=True)
class StoredData:
    """A DataSet saved as .npz, with what the file cannot hold: where each input's rows go in a feed.

    Worker processes load data from such files; without the layout a recurrent state fed as
    rank+1 rows would reach the model with one axis too many.
    """

    path: str
    batch_axes: tuple[tuple[str, int | None], ...] = ()
    row_feeds: frozenset[str] = frozenset()

    @staticmethod
    def save(path: Path, data: DataSet) -> StoredData:
        """Write ``data`` to ``path`` and return the reference that loads it back as it was."""
        save_npz(path, data)
        return StoredData(str(path), tuple(sorted(data.batch_axes.items())), data.row_feeds)

    def load(self) -> DataSet:
        """The DataSet, its arrays read lazily from disk."""
        return dataclasses.replace(load_npz(self.path), batch_axes=dict(self.batch_axes), row_feeds=self.row_feeds)
