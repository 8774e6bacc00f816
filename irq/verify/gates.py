"""Budgets a CI can gate on: limits on accuracy drop, agreement, SQNR, size and speed-up.

Each budget is checked against the figures already in a report. A budget that could not be
measured (no labels for ``max_drop``, no latency for ``min_speedup``) counts as missed: a gate
that passes because nothing was measured is no gate. The caller writes the report and the
artifact first, then calls :func:`enforce`, which raises :class:`BudgetError` (exit code 3).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields
from typing import Any

from irq.errors import BudgetError


@dataclass(frozen=True)
class Budgets:
    """Limits on a report's figures; None means "not checked"."""

    max_drop: float | None = None  # top-1 accuracy drop vs float, in points (needs labels)
    min_agreement: float | None = None  # top-1 agreement with float, 0..1
    min_sqnr: float | None = None  # output SQNR vs float, dB
    max_size_ratio: float | None = None  # artifact bytes / float bytes
    min_speedup: float | None = None  # float median latency / artifact median latency

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Budgets:
        """The budgets given on a command line (flags left out are not checked)."""
        return cls(**{f.name: getattr(args, f.name, None) for f in fields(cls)})

    def any(self) -> bool:
        """Whether at least one budget is set."""
        return any(getattr(self, f.name) is not None for f in fields(self))


#: Flag name, help text and how to read the figure (value, or a reason it is missing).
_HELP = {
    "max_drop": "fail (exit 3) when the top-1 accuracy drop vs float exceeds this many points (needs labels)",
    "min_agreement": "fail (exit 3) when top-1 agreement with float is below this (0-1)",
    "min_sqnr": "fail (exit 3) when the output SQNR vs float is below this many dB",
    "max_size_ratio": "fail (exit 3) when artifact size / float size exceeds this",
    "min_speedup": "fail (exit 3) when float latency / artifact latency is below this (measured here)",
}


def add_budget_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add the ``--max-drop``... flags (``skip``: dests another module already added)."""
    g = parser.add_argument_group("budgets (checked after the report and artifact are written; exit 3 if missed)")
    for name, text in _HELP.items():
        if name not in skip:
            g.add_argument("--" + name.replace("_", "-"), type=float, help=text)


def _number(value: Any) -> float | None:
    """A figure as a float (reports written to disk hold inf/nan as strings)."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _figure(report: dict[str, Any], name: str) -> tuple[float | None, str]:
    """The report's figure for budget ``name``, or None and why it is missing."""
    if name == "max_drop":
        acc = report.get("accuracy")
        return (_number(acc.get("drop_top1_pt")), "") if acc else (None, "no accuracy: evaluation data has no labels")
    if name == "min_agreement":
        agr = report.get("agreement")
        return (_number(agr.get("top1")), "") if agr else (None, "no agreement: the output is not class scores")
    if name == "min_sqnr":
        err = report.get("error")
        return (_number(err.get("sqnr_db")), "") if err else (None, "no error figures: no evaluation data")
    if name == "max_size_ratio":
        return _number(report["size_bytes"].get("ratio")), ""
    lat = report.get("latency")
    if not lat or "speedup" not in lat:
        why = "latency is measured on the device for this runtime" if report.get("latency_on_device") \
            else "latency was not measured (--no-latency or no evaluation data)"
        return None, why
    return _number(lat["speedup"]), ""


def check(report: dict[str, Any], budgets: Budgets) -> list[dict[str, Any]]:
    """One row per set budget: name, limit, value, passed, detail."""
    rows = []
    for f in fields(budgets):
        limit = getattr(budgets, f.name)
        if limit is None:
            continue
        value, why = _figure(report, f.name)
        if value is None or math.isnan(value):
            rows.append({"budget": f.name, "limit": limit, "value": None, "passed": False,
                         "detail": f"not measured: {why or 'figure missing'}"})
            continue
        passed = value <= limit if f.name.startswith("max_") else value >= limit
        op = "<=" if f.name.startswith("max_") else ">="
        detail = f"{value:.4g} {op} {limit:.4g}" if passed else f"missed: {value:.4g} is not {op} {limit:.4g}"
        rows.append({"budget": f.name, "limit": limit, "value": value, "passed": bool(passed), "detail": detail})
    return rows


def section(report: dict[str, Any], budgets: Budgets | None) -> dict[str, Any] | None:
    """The report's ``budgets`` section (None when no budget is set)."""
    if budgets is None or not budgets.any():
        return None
    rows = check(report, budgets)
    return {"passed": all(r["passed"] for r in rows), "checks": rows}


def enforce(report: dict[str, Any], where: str) -> None:
    """BudgetError naming every missed budget in ``report`` (call after writing everything)."""
    section = report.get("budgets")
    if not section or section["passed"]:
        return
    missed = "; ".join(f"{r['budget']} ({r['detail']})" for r in section["checks"] if not r["passed"])
    raise BudgetError(f"model {report.get('model')!r} on {report.get('target')}: {missed}; report saved to {where}")
