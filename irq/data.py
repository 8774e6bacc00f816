"""Calibration and evaluation data: loading, validation against the model, batching.

A DataSet holds one array per model input, samples (rows) on axis 0, and optional integer
labels. ``batch_axes`` says where each input's rows go in a model feed: axis 0 for the usual
batch-first input, another axis for an input whose batch sits elsewhere (a recurrent state
``[layers, batch, hidden]``), or None for an input without a batch axis (a scalar sample rate):
one value per row, and rows are fed together only when those values agree. Arrays from
uncompressed ``.npz`` files are read batch by batch from disk, so a large calibration set does
not grow the process's memory.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irq.errors import DataError

LABEL_KEY = "y"


@dataclass
class DataSet:
    """Inputs by model input name (N, ...) and optional labels (N,)."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = "<memory>"
    batch_axes: dict[str, int | None] = field(default_factory=dict)  # absent: 0
    #: Inputs whose rows are complete feeds (the array has one axis more than the model input);
    #: their batch axis, if any, is the size-1 axis ``batch_axes`` names.
    row_feeds: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.inputs:
            raise DataError(f"{self.source}: no input arrays")
        counts = {k: len(v) for k, v in self.inputs.items()}
        if len(set(counts.values())) != 1:
            raise DataError(f"{self.source}: inputs have different sample counts {counts}")
        if self.labels is not None and len(self.labels) != len(self):
            raise DataError(f"{self.source}: {len(self.labels)} labels for {len(self)} samples")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batch_axis(self, name: str) -> int | None:
        """Where the rows of input ``name`` go in a feed (None: the input has no batch axis)."""
        return self.batch_axes.get(name, 0)

    @property
    def batch_first(self) -> bool:
        """True when every input is fed rows-on-axis-0 (the arrays are the feeds)."""
        return all(self.batch_axis(k) == 0 for k in self.inputs)

    def feed(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The model feed for rows ``start:stop`` (an input without a batch axis takes row ``start``)."""
        out = {}
        for k, v in self.inputs.items():
            axis = self.batch_axis(k)
            if axis is None:
                out[k] = np.array(v[start])  # (ascontiguousarray would make a scalar 1-d)
                continue
            rows = np.asarray(v[start:stop])
            if k in self.row_feeds:
                rows = rows.squeeze(axis + 1)  # each row holds its own size-1 batch axis
            out[k] = np.ascontiguousarray(rows if axis == 0 else np.moveaxis(rows, 0, axis))
        return out

    def max_batch(self) -> int | None:
        """1 when an input without a batch axis varies between rows (those rows cannot share a feed)."""
        for k, v in self.inputs.items():
            if self.batch_axis(k) is None and len(self) > 1:
                first = np.asarray(v[0])
                if any(not np.array_equal(np.asarray(v[i]), first) for i in range(1, len(self))):
                    return 1
        return None

    def batches(self, batch_size: int = 32) -> Iterator[dict[str, np.ndarray]]:
        """Yield consecutive feeds as fresh arrays (memory maps are read per batch)."""
        size = max(1, min(batch_size, self.max_batch() or batch_size))
        for start in range(0, len(self), size):
            yield self.feed(start, min(start + size, len(self)))

    def take(self, indices: np.ndarray | slice) -> DataSet:
        """A subset (copied into memory)."""
        labels = None if self.labels is None else np.asarray(self.labels[indices])
        return DataSet({k: np.asarray(v[indices]) for k, v in self.inputs.items()}, labels,
                       f"{self.source}[subset]", dict(self.batch_axes), self.row_feeds)

    def without(self, names: set[str] | frozenset[str]) -> DataSet:
        """The same rows without the inputs ``names`` (inputs a pass froze into constants)."""
        if not names & set(self.inputs):
            return self
        keep = {k: v for k, v in self.inputs.items() if k not in names}
        return DataSet(keep, self.labels, self.source, {k: a for k, a in self.batch_axes.items() if k in keep},
                       self.row_feeds & frozenset(keep))

    def head(self, n: int) -> DataSet:
        """The first ``n`` samples (all if fewer)."""
        return self.take(slice(0, min(n, len(self))))

    def fingerprint(self) -> str:
        """A content hash of the arrays and labels (for caches and reports)."""
        import hashlib

        h = hashlib.sha256()
        for k in sorted(self.inputs):
            a = np.ascontiguousarray(self.inputs[k])
            h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode() + str(self.batch_axis(k)).encode()
                     + str(k in self.row_feeds).encode())
            h.update(a.tobytes())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()[:16]


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


def load_data(spec: str | Path | DataSet, **image_options: object) -> DataSet:
    """Load data from an .npz file or an image folder (see ``irq.images``)."""
    if isinstance(spec, DataSet):
        return spec
    path = Path(spec)
    if path.is_dir():
        from irq.images import load_image_folder

        return load_image_folder(path, **image_options)  # type: ignore[arg-type]
    if path.suffix == ".npz" or not path.suffix:
        return load_npz(path)
    raise DataError(f"{path}: unsupported data format (use .npz or a folder of images)")


def save_npz(path: Path, data: DataSet) -> None:
    """Write a DataSet as an uncompressed .npz (memory-mappable on load), atomically."""
    from irq.io import atomic_path

    arrays = dict(data.inputs)
    if data.labels is not None:
        arrays[LABEL_KEY] = np.asarray(data.labels)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
