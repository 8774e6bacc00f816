"""The report as a typed record: one attribute per section of report.json.

Every stage fills its own sections (build: what was made; verification: how it answers;
the budget search, QAT and batch: their own); :meth:`Report.to_dict` turns it into the
report.json schema (schema_version 1), leaving out the sections no stage filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1

#: A section of report.json as it is written (its own shape is in irq/schema/report.schema.json).
Section = dict[str, Any]


@dataclass
class Report:
    """One artifact's report."""

    model: str
    target: str
    artifact: str
    size_bytes: Section
    layers: list[Section] = field(default_factory=list)
    backend: str | None = None
    runtime: str | None = None
    preset: str | None = None
    scheme: Section | None = None
    passes: list[Section] | None = None
    calibration: Section | None = None
    hazards: list[Section] | None = None
    artifact_info: Section | None = None
    # how the artifact answers against float (verification stage)
    samples: int | None = None
    verification: Section | None = None
    float_reference: str | None = None
    accuracy: Section | None = None
    agreement: Section | None = None
    error: Section | None = None
    latency: Section | None = None
    latency_on_device: Section | None = None
    crash_test: list[Section] | None = None
    layer_error: Section | None = None
    # what the entry point adds
    input_shapes: Section | None = None
    frozen_inputs: dict[str, float] | None = None
    mixed_precision: Section | None = None
    qat: Section | None = None
    batch: Section | None = None
    wall_seconds: float | None = None
    budgets: Section | None = None
    warnings: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def warn(self, *lines: str) -> None:
        """Add warnings (the CLI prints them; report.json keeps them)."""
        self.warnings.extend(lines)

    def to_dict(self) -> dict[str, Any]:
        """report.json's content (sections left empty are not written; warnings come first)."""
        out: dict[str, Any] = {"warnings": list(self.warnings)} if self.warnings else {}
        out["schema_version"] = self.schema_version
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("warnings", "schema_version") and value is not None:
                out[f.name] = value
        return out
