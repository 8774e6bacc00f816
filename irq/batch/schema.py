"""The batch manifest as frozen dataclasses: what ``irq batch`` reads, validated, before any job runs.

``irq.batch.manifest`` builds these from YAML or TOML; everything after that (planning, the
workers, the cache keys) reads only these types, never the raw mappings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from irq.pipeline.recipe import Recipe
from irq.verify.gates import Budgets  # the same limits as `irq compile --max-drop ...`


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: an ONNX file, a zoo name or ``package.module:function``."""

    kind: str  # "onnx" | "zoo" | "callable"
    spec: str  # absolute file path, zoo name, or module:function

    def __post_init__(self) -> None:
        if self.kind not in ("onnx", "zoo", "callable"):
            raise ValueError(f"unknown model kind {self.kind!r}")

    def onnx_path(self) -> Path:
        """The ONNX file behind an ``onnx`` or ``zoo`` reference."""
        if self.kind == "zoo":
            from irq import zoo

            return zoo.get(self.spec).onnx_path
        return Path(self.spec)


@dataclass(frozen=True)
class DataRef:
    """Calibration or evaluation data: a file/folder, or a zoo model's own data."""

    zoo: str = ""  # zoo model whose data this is ("" when ``path`` is set)
    path: Path | None = None
    samples: int | None = None  # first N samples only

    def __post_init__(self) -> None:
        if bool(self.zoo) == (self.path is not None):
            raise ValueError("a data reference is either a zoo name or a path")
        if self.samples is not None and self.samples < 1:
            raise ValueError("samples must be at least 1")

    def describe(self) -> str:
        """``zoo:name`` or the path, with the sample limit."""
        where = f"zoo:{self.zoo}" if self.zoo else str(self.path)
        return where + (f"[:{self.samples}]" if self.samples else "")


@dataclass(frozen=True)
class JobSettings:
    """Everything that decides one job beyond the model and target, after layering.

    Layers, weakest first: the manifest's ``defaults``, the model entry, and the entry's
    ``overrides`` for that target.
    """

    calib: DataRef | None = None
    eval: DataRef | None = None
    recipe: Recipe | None = None
    pipeline: str | None = None
    disable_passes: tuple[str, ...] = ()
    budgets: Budgets = field(default_factory=Budgets)
    latency: bool = True
    io: str | None = None  # TFLite int8 I/O type
    deployment_target: str | None = None  # Core ML


@dataclass(frozen=True)
class JobSpec:
    """One model x target job as the manifest states it."""

    name: str  # the model entry's name: the output folder OUTDIR/<name>/<target>
    model: ModelRef
    target: str
    settings: JobSettings
    python_path: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        """``name/target``, as shown in progress lines and the summary."""
        return f"{self.name}/{self.target}"


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its file and its jobs in manifest order."""

    path: Path
    jobs: tuple[JobSpec, ...]
