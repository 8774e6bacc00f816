"""Files the sensitivity analysis and the mixed-precision search write: JSON, CSV and charts."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from irq.io import atomic_path, atomic_write_text
from irq.report.build import jsonable
from irq.sensitivity.analysis import MODES, SensitivityResult


def result_dict(result: SensitivityResult) -> dict[str, Any]:
    """The JSON form of a sensitivity run."""
    return {"model": result.model, "target": result.target, "metric": result.metric,
            "keep_precision": result.high.value, "samples": result.samples,
            "timings": {k: round(v, 3) for k, v in result.timings.items()},
            "baseline_all_quantized": result.baseline, "layers": result.rows}


def _csv_row(row: dict[str, Any], metrics: list[str]) -> dict[str, Any]:
    flat = {k: row.get(k, "") for k in ("rank", "layer", "op_type", "params", "bytes", "rank_alone",
                                          "rank_all_but_one", "confirmed")}
    for suffix in ("", "_full"):
        for m in metrics:
            for part in (*MODES, "gain"):
                values = row.get(part + suffix)
                if values is not None or not suffix:
                    flat[f"{part}_{m}{suffix}"] = "" if values is None else values[m]
    for k in ("sqnr_db", "mse", "cosine"):
        flat[f"layer_{k}"] = row.get("layerwise", {}).get(k, "")
    return flat


def write_csv(path: Path, result: SensitivityResult) -> None:
    """One line per layer, best-ranked first."""
    metrics = list(result.baseline["subset"])
    rows = [_csv_row(r, metrics) for r in result.rows]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def plot_top_layers(path: Path, result: SensitivityResult, top: int = 20) -> None:
    """Bar chart of the top layers: gain from keeping each in float, and its output SQNR."""
    plt = _pyplot()
    rows = result.rows[:top]
    names = [f"{r['rank']}. {r['layer']}" for r in rows][::-1]
    gains = [r.get("gain_full", r["gain"])["sqnr"] for r in rows][::-1]
    layer_sqnr = [r.get("layerwise", {}).get("sqnr_db", 0.0) for r in rows][::-1]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 0.32 * len(rows) + 1.8), sharey=True)
    a.barh(names, gains, color=["tab:red" if r["confirmed"] else "tab:orange" for r in rows][::-1])
    a.set_xlabel("output SQNR gain when only this layer stays float (dB)")
    b.barh(names, layer_sqnr, color="tab:blue")
    b.set_xlabel("layer output SQNR in the int8 model (dB)")
    fig.suptitle(f"{result.model} on {result.target}: most sensitive layers (ranked by {result.metric}; "
                 "red = confirmed on the full set)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_sensitivity(out_dir: Path, result: SensitivityResult) -> dict[str, Path]:
    """Write sensitivity.json, sensitivity.csv and sensitivity.png under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "sensitivity.json", "csv": out_dir / "sensitivity.csv",
             "png": out_dir / "sensitivity.png"}
    atomic_write_text(paths["json"], json.dumps(jsonable(result_dict(result)), indent=2) + "\n")
    write_csv(paths["csv"], result)
    plot_top_layers(paths["png"], result)
    return paths


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both size (smaller) and metric (higher), smallest first."""
    front, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p["size_bytes"], -p["metric"])):
        if p["metric"] > best:
            front.append(p)
            best = p["metric"]
    return front


def write_pareto(out_dir: Path, points: list[dict[str, Any]], metric: str, threshold: float | None,
                 title: str) -> dict[str, Path]:
    """pareto.json (every measured assignment, the front flagged) and pareto.png."""
    valid = [p for p in points if p.get("size_bytes") is not None]  # the backend refused the others
    front = {id(p) for p in pareto_front(valid)}
    rows = [{**p, "pareto": id(p) in front} for p in sorted(points, key=lambda p: p["float_layers"])]
    paths = {"json": out_dir / "pareto.json", "png": out_dir / "pareto.png"}
    atomic_write_text(paths["json"], json.dumps(jsonable({"metric": metric, "threshold": threshold,
                                                           "points": rows}), indent=2) + "\n")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    shown = [p for p in rows if p.get("size_bytes") is not None]
    ax.scatter([p["size_bytes"] / 1e6 for p in shown], [p["metric"] for p in shown], color="grey", label="measured")
    fr = [p for p in rows if p["pareto"]]
    ax.plot([p["size_bytes"] / 1e6 for p in fr], [p["metric"] for p in fr], "o-", color="tab:red", label="Pareto front")
    for p in fr:
        ax.annotate(str(p["float_layers"]), (p["size_bytes"] / 1e6, p["metric"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    if threshold is not None:
        ax.axhline(threshold, linestyle="--", color="tab:green", label=f"budget ({threshold:g})")
    ax.set_xlabel("artifact size (MB)")
    ax.set_ylabel("top-1 change vs float (points)" if metric == "top1" else metric)
    ax.set_title(title + " (labels: layers kept in higher precision)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, paths["png"])
    return paths
