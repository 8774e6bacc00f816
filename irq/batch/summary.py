"""The batch summary: one row per model x target, as ``summary.json`` and a ``summary.md`` table.

Rows are read from each job's report.json, so jobs finished by an earlier run appear with
their numbers. Budgets are checked here, against the reports, not inside the jobs: changing
a budget re-checks every job without recompiling any.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from irq.batch.job import REPORT, Job, JobResult
from irq.batch.schema import Budgets
from irq.io import atomic_write_text
from irq.verify.gates import check


def metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one report (None where the report has none)."""
    acc, lat = report.get("accuracy") or {}, report.get("latency") or {}
    float_ms = (lat.get("float") or {}).get("median_ms")
    art_ms = (lat.get("artifact") or {}).get("median_ms")
    return {
        "size_ratio": (report.get("size_bytes") or {}).get("ratio"),
        "artifact_bytes": (report.get("size_bytes") or {}).get("artifact"),
        "top1": (acc.get("artifact") or {}).get("top1"),
        "float_top1": (acc.get("float") or {}).get("top1"),
        "accuracy_drop_pt": acc.get("drop_top1_pt"),
        "agreement": (report.get("agreement") or {}).get("top1"),
        "cosine": (report.get("error") or {}).get("cosine"),
        "sqnr_db": (report.get("error") or {}).get("sqnr_db"),
        "latency_ratio": art_ms / float_ms if float_ms and art_ms is not None else None,
        "speedup": lat.get("speedup"),
    }


def check_budgets(budgets: Budgets, report: dict[str, Any]) -> tuple[str, list[str]]:
    """``("met" | "missed" | "none", misses)`` by ``irq.verify.gates.check`` (unmeasured counts as missed)."""
    if not budgets.any():
        return "none", []
    misses = [f"{r['budget']}: {r['detail']}" for r in check(report, budgets) if not r["passed"]]
    return ("missed" if misses else "met"), misses


def build_rows(jobs: list[Job], results: dict[str, JobResult], out: Path) -> list[dict[str, Any]]:
    """One summary row per job, in manifest order."""
    rows = []
    for job in jobs:
        spec, result = job.spec, results[job.spec.label]
        row: dict[str, Any] = {"model": spec.name, "target": spec.target, "status": result.status,
                               "seconds": round(result.seconds, 2), "stages": dict(result.stages)}
        if result.node:
            row["node"] = result.node
        if not result.ok:
            row.update(error=result.error, budget="n/a", budget_misses=[])
            rows.append(row)
            continue
        report_path = job.out_dir / REPORT
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError) as e:
            row.update(status="failed", error=f"{report_path}: unreadable report ({e})", budget="n/a",
                       budget_misses=[])
            rows.append(row)
            continue
        row.update(metrics(report))
        row["budget"], row["budget_misses"] = check_budgets(spec.settings.budgets, report)
        row["report"] = os.path.relpath(report_path, out)
        row["artifact"] = os.path.relpath(report["artifact"], out)
        rows.append(row)
    return rows


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def _float(v: Any) -> float | None:
    # reports hold an infinite SQNR (identical outputs) as the string "inf"
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


def markdown(rows: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    """The summary as a Markdown table with links to each report."""
    lines = ["# irq batch summary", "",
             " · ".join(f"{k}: {v}" for k, v in totals.items()), "",
             "| model | target | status | size ratio | top-1 (float) | agreement | cosine | SQNR dB "
             "| latency ratio | budget | report |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r["status"] == "failed":
            lines.append(f"| {r['model']} | {r['target']} | **failed** | | | | | | | | "
                         f"{r['error'].replace('|', '/')} |")
            continue
        top1 = "—" if r["top1"] is None else f"{_pct(r['top1'])} ({_pct(r['float_top1'])})"
        budget = r["budget"] + (f": {'; '.join(r['budget_misses'])}" if r["budget_misses"] else "")
        lines.append(f"| {r['model']} | {r['target']} | {r['status']} | {_num(r['size_ratio'])} | {top1} | "
                     f"{_pct(r['agreement'])} | {_num(r['cosine'], '.5f')} | {_num(_float(r['sqnr_db']), '.1f')} | "
                     f"{_num(r['latency_ratio'], '.2f')} | "
                     f"{budget} | [report]({r['report']}) |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, jobs: list[Job], results: dict[str, JobResult],
                  wall_seconds: float) -> dict[str, Any]:
    """Write ``summary.json`` and ``summary.md`` under ``out``; return the JSON document."""
    rows = build_rows(jobs, results, out)
    statuses = [r["status"] for r in rows]
    totals = {"jobs": len(rows), "built": statuses.count("built"), "copied": statuses.count("copied"),
              "up_to_date": statuses.count("up-to-date"), "failed": statuses.count("failed"),
              "budget_missed": sum(r["budget"] == "missed" for r in rows),
              "wall_seconds": round(wall_seconds, 2)}
    doc = {"totals": totals, "rows": rows}
    atomic_write_text(out / "summary.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out / "summary.md", markdown(rows, totals))
    return doc
