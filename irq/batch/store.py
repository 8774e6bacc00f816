"""The batch cache: a content-addressed store of stage results under ``OUTDIR/.cache``.

Layout: ``<kind>/<key>.json`` (small results, e.g. calibration ranges), ``<kind>/<key>.onnx``
(imported models) and ``<kind>/<key>/`` folders (finished jobs). Every entry is written
through ``irq.io.atomic_path``, so an entry either exists complete or not at all, whatever
kills the writer. Workers that need the same missing entry serialise on a per-key lock file
(``flock``), so two targets of one model calibrate once: the second waits, then reads.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irq.io import atomic_path, atomic_write_bytes, atomic_write_text

try:
    import fcntl
except ImportError:  # not on POSIX: no cross-process lock; duplicated work, never corrupt entries
    fcntl = None  # type: ignore[assignment]

#: Temporary folders of interrupted writers older than this are removed by ``clean_stale``.
STALE_SECONDS = 3600.0


class EntryBusy(Exception):  # not an IrqError: the scheduler handles it, no user ever sees it
    """Another process is computing the entry; raised instead of waiting when asked to."""


@dataclass(frozen=True)
class Store:
    """A content-addressed store rooted at ``root``."""

    root: Path

    def path(self, kind: str, key: str, suffix: str = "") -> Path:
        """Where the entry ``key`` of ``kind`` lives (a file with ``suffix``, or a folder)."""
        return self.root / kind / f"{key}{suffix}"

    def read_json(self, kind: str, key: str) -> Any | None:
        """The JSON entry, or None when it is missing or unreadable (then it is recomputed)."""
        try:
            return json.loads(self.path(kind, key, ".json").read_text())
        except (OSError, ValueError):
            return None

    def write_json(self, kind: str, key: str, doc: Any) -> None:
        """Write a JSON entry atomically."""
        atomic_write_text(self.path(kind, key, ".json"), json.dumps(doc, sort_keys=True) + "\n")

    def write_bytes(self, kind: str, key: str, suffix: str, data: bytes) -> Path:
        """Write a binary entry atomically and return its path."""
        path = self.path(kind, key, suffix)
        atomic_write_bytes(path, data)
        return path

    def folder(self, kind: str, key: str) -> Path | None:
        """The folder entry, or None when it does not exist (yet)."""
        path = self.path(kind, key)
        return path if path.is_dir() else None

    @contextlib.contextmanager
    def new_folder(self, kind: str, key: str) -> Iterator[Path]:
        """A fresh folder to fill; it becomes the entry only when the block succeeds."""
        with atomic_path(self.path(kind, key)) as tmp:
            tmp.mkdir()
            yield tmp

    def lock(self, kind: str, key: str, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """Hold the exclusive lock of one entry (released when the process dies, too).

        With ``wait=False`` a lock held elsewhere raises EntryBusy instead of blocking.
        """
        return file_lock(self.root / "locks" / f"{kind}-{key}.lock", wait)

    def clean_stale(self, max_age: float = STALE_SECONDS) -> int:
        """Remove temporary folders that interrupted writers left (``.name.XXXX``); return how many."""
        return remove_temporaries(self.root, max_age)


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the block; EntryBusy when held and ``wait`` is False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise EntryBusy(str(path)) from None
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def remove_temporaries(root: Path, max_age: float = 0.0) -> int:
    """Remove ``atomic_path`` leftovers older than ``max_age`` seconds; return how many.

    They are hidden ``.name.XXXX`` folders at the top of ``root`` or one level down, where
    batch outputs and cache entries live.
    """
    if not root.is_dir():
        return 0
    now, removed = time.time(), 0
    for tmp in [*root.glob(".*.*"), *root.glob("*/.*.*")]:
        if tmp.is_dir() and now - tmp.stat().st_mtime >= max_age:
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    return removed
