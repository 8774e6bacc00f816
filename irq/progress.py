"""Progress bars for long steps: on an interactive stderr only, off with IRQ_PROGRESS=0."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar when stderr is a terminal (never in pipes, logs or tests)."""
    if os.environ.get("IRQ_PROGRESS", "1") == "0" or not sys.stderr.isatty():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, leave=False, file=sys.stderr, unit="batch")
