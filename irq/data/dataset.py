"""The DataSet: one array per model input, samples (rows) on axis 0, and optional labels.

``batch_axes`` says where each input's rows go in a model feed: axis 0 for the usual
batch-first input, another axis for an input whose batch sits elsewhere (a recurrent state
``[layers, batch, hidden]``), or None for an input without a batch axis (a scalar sample rate):
one value per row, and rows are fed together only when those values agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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
