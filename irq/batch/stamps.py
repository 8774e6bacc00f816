"""Stat-stamped digests: skip re-hashing inputs whose files have not changed since last time.

Deciding that a job is up to date needs its model's and data's content hashes, and hashing a
90 MB model or preprocessing 300 photos on every rerun would cost seconds. Like ``make`` and
git's index, a digest is remembered under the (path, size, mtime, inode) of the files it was
computed from and reused while none of them changed. The planner reads these; workers always
hash what they actually read (so a job's recorded key is exact) and record the digests under
stamps taken before reading, so the first rerun after a cold run already skips the hashing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from irq.batch.keys import stage_key
from irq.batch.schema import DataRef, ModelRef
from irq.batch.store import Store


def file_stats(paths: Iterable[Path]) -> list[tuple[str, int, int, int]]:
    """(path, size, mtime_ns, inode) of each file, folders expanded recursively, sorted."""
    files: set[Path] = set()
    for p in paths:
        if p.is_dir():
            files.update(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
        elif p.exists():
            files.add(p)
    stats = []
    for f in sorted(files):
        st = f.stat()
        stats.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
    return stats


def stamp_key(what: str, files: Iterable[Path]) -> str:
    """The stamp of ``what`` as ``files`` look now (take it *before* reading them)."""
    return stage_key("stamp", what=what, files=file_stats(files))


def remember(store: Store, key: str, what: str, digest: str) -> None:
    """Record ``digest`` under a stamp taken before it was computed."""
    if store.read_json("stamps", key) is None:
        store.write_json("stamps", key, {"what": what, "digest": digest})


def stamped(store: Store, what: str, files: Iterable[Path], compute: Callable[[], str]) -> str:
    """``compute()``, or the value it returned last time ``files`` looked exactly like now."""
    key = stamp_key(what, files)
    doc = store.read_json("stamps", key)
    if isinstance(doc, dict) and isinstance(doc.get("digest"), str):
        return doc["digest"]
    digest = compute()
    remember(store, key, what, digest)
    return digest


def data_what(ref: DataRef, role: str) -> str:
    """What a data fingerprint's stamp is called."""
    return f"data {role} {ref.describe()}"


def import_what(model: ModelRef) -> str:
    """What an import key's stamp is called."""
    return f"import {model.kind} {model.spec}"


def _zoo_files() -> list[Path]:
    """What zoo models and data are made from: the zoo package (code, shipped data) and its cache."""
    from irq import zoo
    from irq.zoo._cache import cache_dir

    return [Path(zoo.__file__).parent, cache_dir() / "zoo"]


def model_files(model: ModelRef, python_path: tuple[Path, ...]) -> list[Path]:
    """The files a model's import key is computed from."""
    from irq.batch.keys import module_source

    if model.kind == "callable":
        return [module_source(model.spec, python_path)]
    return [model.onnx_path()]


def data_files(ref: DataRef) -> list[Path]:
    """The files a data reference's content comes from."""
    return _zoo_files() if ref.zoo else [ref.path] if ref.path is not None else []
