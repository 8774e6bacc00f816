"""What every backend provides: lowering the IR to a file, and running that file.

A backend never re-decides what a pass decided: it reads the graph (with Q/DQ nodes already
inserted where the target wants them), the calibrated ranges and the per-layer plan.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from irq.ir.model import QModel
    from irq.pipeline.targets import Target


class Runner(abc.ABC):
    """Runs an artifact in its own runtime.

    Inputs and outputs are in the ONNX model's layout and order (NCHW images, say); a runner
    whose runtime uses another layout converts at its boundary.
    """

    runtime: str = "?"

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch and return the outputs in the ONNX model's output order."""

    @property
    def max_batch(self) -> int | None:
        """The largest batch the artifact accepts (None: any), e.g. 1 for a fixed-batch model."""
        return None


@dataclass
class Artifact:
    """A lowered model on disk and how it was made."""

    path: Path
    target: str
    runtime: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk (a package directory counts all its files)."""
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size


class Backend(abc.ABC):
    """Lowers a QModel for one family of targets."""

    name: str = "?"
    suffix: str = ""
    #: Whether the artifact's inputs must have fixed shapes (the driver fixes them before the passes).
    needs_static_shapes: bool = False
    #: Whether latency measured on this machine means anything (Core ML predicts on Apple devices only).
    host_latency: bool = True
    #: Whether the artifact is a graph per-layer SQNR can read tensor by tensor (ONNX).
    per_layer_error: bool = False
    #: Threads for both sides of a latency comparison (None: the machine's cores).
    latency_threads: int | None = None

    def latency_baseline(self, artifact_path: Path) -> str | None:
        """The target whose float lowering is the fair latency baseline in this runtime (None: onnxruntime)."""
        return None

    def latency_runner(self, artifact_path: Path, reference: QModel | None, threads: int) -> Runner:
        """The runner latency is measured with (by default the verification runner)."""
        return self.runner(artifact_path, reference)

    @abc.abstractmethod
    def lower(self, qmodel: QModel, target: Target, out_dir: Path) -> Artifact:
        """Write the artifact for ``target`` under ``out_dir`` (atomically) and describe it."""

    @abc.abstractmethod
    def runner(self, artifact_path: Path, reference: QModel | None = None) -> Runner:
        """A runner for an artifact this backend wrote.

        ``reference`` is the float IR, for backends that need the ONNX I/O names or layout.
        """
