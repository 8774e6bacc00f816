"""What the frontends and passes found out about a model, as typed records.

The driver reads three facts (where the model came from, its audit, how it was calibrated);
every other pass leaves a record of what it did under its own name, which the report prints
beside that pass's timing. Plugins record the same way.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SourceFile:
    """The file a frontend converted the model from, when it was not ONNX (sizes and references use it)."""

    format: str
    path: str


@dataclass(frozen=True)
class CalibrationSummary:
    """How the ranges were measured: the method, on how many samples, for how many tensors."""

    method: str
    samples: int
    tensors: int

    def to_json(self) -> dict[str, Any]:
        """The report's ``calibration`` section."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CalibrationSummary:
        """Read back what :meth:`to_json` wrote (a calibration cache entry)."""
        return cls(str(data["method"]), int(data["samples"]), int(data["tensors"]))


@dataclass
class Analysis:
    """The findings on one model under compilation."""

    source: SourceFile | None = None
    #: ``irq audit``'s findings on the graph (passes/analyze.py), hazards included.
    audit: dict[str, Any] | None = None
    calibration: CalibrationSummary | None = None
    #: Per pass name, what that pass did (counts, names of nodes kept, why it skipped).
    passes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, pass_name: str, **facts: Any) -> None:
        """Note what ``pass_name`` did (a later run of the same pass replaces its record)."""
        self.passes[pass_name] = facts

    def of(self, pass_name: str) -> dict[str, Any]:
        """The record ``pass_name`` left (empty when it has not run or recorded nothing)."""
        return self.passes.get(pass_name, {})

    @property
    def hazards(self) -> list[dict[str, Any]]:
        """The audit's hazards (none before the audit ran)."""
        return list((self.audit or {}).get("hazards", []))

    def copy(self) -> Analysis:
        """A copy whose records a clone's passes can change without touching the original's."""
        return Analysis(self.source, copy.deepcopy(self.audit), self.calibration, copy.deepcopy(self.passes))
