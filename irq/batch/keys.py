"""Content addresses: every cached stage is named by a hash of everything it depends on.

A key is the SHA-256 of a canonical JSON document (sorted keys, no whitespace) holding the
stage name, its inputs' fingerprints and the code that computes it: the versions of onnx,
onnxruntime, numpy and the backends' toolchains, and a hash of irq's own source files (passes,
backends and frontends included) and of plugin passes' versions. So an edited pass, a new
default or an upgraded onnxruntime never reuses an old result; the price is that any edit to
irq's sources makes the next batch start cold.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from irq.errors import InputError

#: Bump when the layout or meaning of cache entries changes.
CACHE_VERSION = 1
_PACKAGES = ("onnx", "onnx-ir", "onnxruntime", "numpy", "torch", "onnxconverter-common", "tensorflow",
             "tf-keras", "onnx2tf", "ai-edge-litert", "coremltools")


def irq_source_digest() -> str:
    """SHA-256 over irq's Python sources (irq, irq.passes, irq.backends, irq.frontends), by relative path."""
    import irq
    import irq.backends
    import irq.frontends
    import irq.passes

    h = hashlib.sha256()
    for package in (irq, irq.passes, irq.backends, irq.frontends):
        for root in package.__path__:
            for f in sorted(Path(root).rglob("*.py")):
                if f.parent.name != "__pycache__":
                    h.update(f"{package.__name__}/{f.relative_to(root)}".encode())
                    h.update(f.read_bytes())
    return h.hexdigest()


@cache
def code_versions() -> dict[str, str]:
    """What the cached results depend on besides their inputs: package versions and irq's code."""
    found = {"cache": str(CACHE_VERSION), "irq-source": irq_source_digest()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    for ep in metadata.entry_points(group="irq.passes"):  # plugin passes: their distribution's version
        found[f"plugin:{ep.name}"] = f"{ep.value}@{ep.dist.version if ep.dist else '?'}"
    return found


def _plain(obj: Any) -> Any:
    """JSON-able form of dataclasses, enums, paths, tuples (canonical, for hashing)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.compare}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def stage_key(stage: str, **parts: Any) -> str:
    """The content address of ``stage`` computed from ``parts``."""
    doc = {"stage": stage, "versions": code_versions(), "parts": _plain(parts)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    try:
        with Path(path).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    """SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def module_source(spec: str, search: tuple[Path, ...]) -> Path:
    """The source file of ``package.module`` in ``spec`` (``package.module:function``), without importing it.

    Looked up in ``search`` and then ``sys.path``, the way the import system would.
    """
    module = spec.partition(":")[0]
    rel = Path(*module.split("."))
    for root in [*search, *(Path(p or ".") for p in sys.path)]:
        for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    raise InputError(f"{spec}: module {module!r} not found (add its folder to the manifest's python_path)")
