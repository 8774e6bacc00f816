"""The zoo's cache directory: files built on first use, written atomically, reused after."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from irq.io import atomic_path


def cache_dir() -> Path:
    """The irq cache directory: ``$IRQ_CACHE`` if set, else ``~/.cache/irq``."""
    env = os.environ.get("IRQ_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "irq"


def cached(filename: str, build: Callable[[Path], None]) -> Path:
    """The path of ``zoo/filename`` in the cache, calling ``build(tmp_path)`` first if it is missing.

    ``build`` writes the file at the temporary path it is given; it is moved into place only
    when ``build`` returns, so an interrupted build leaves nothing behind. Two processes
    building the same file at once both succeed; the last rename wins with identical content.
    File names carry a version, so a changed recipe never reuses an old file.
    """
    path = cache_dir() / "zoo" / filename
    if not path.exists():
        with atomic_path(path) as tmp:
            build(tmp)
    return path
