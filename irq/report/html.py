"""report.html: one self-contained page (inline CSS, plots as base64 PNG) from a report dict.

Nothing on the page is fetched: it can be mailed, attached to a CI run or opened offline.
Plots are drawn with matplotlib's Agg backend; a section without data is left out.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from irq.io import atomic_write_text

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1100px;
 color:#1b1f24;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a}table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #d0d7de;padding:4px 9px;
 text-align:left;vertical-align:top}th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}.skip{color:#9a6700;font-weight:600}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;font-weight:600}
.banner.ok{background:#dafbe1;border:1px solid #1a7f37}.banner.bad{background:#ffebe9;border:2px solid #cf222e}
.banner.warn{background:#fff8c5;border:1px solid #9a6700}ul.w li{margin:3px 0}img{max-width:100%}
details{margin:6px 0}summary{cursor:pointer;color:#0969da}code{background:#f6f8fa;padding:1px 4px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any, fmt: str = ".4g") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return _e(x) if x is not None else "–"
    return f"{v:{fmt}}" if math.isfinite(v) else _e(str(v))


def _table(head: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td class='n'>{c}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def _bars(labels: list[str], values: list[float], unit: str, title: str, errs: list[float] | None = None,
          colors: list[str] | None = None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.2))
    ax.barh(labels[::-1], values[::-1], xerr=None if errs is None else errs[::-1], capsize=4,
            color=(colors or ["#8c959f"] * len(labels))[::-1])
    ends = [v + (e if errs else 0.0) for v, e in zip(values, errs or [0.0] * len(values), strict=True)]
    for y, (v, end) in enumerate(zip(values[::-1], ends[::-1], strict=True)):
        ax.text(end, y, f"  {v:.3g} {unit}", va="center", fontsize=9)
    low = min([*values, 0.0])
    ax.set_xlim(low * 1.35, max([*ends, 1e-9]) * 1.35)
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _layer_plot(layers: list[dict[str, Any]]) -> str:
    plt = _plt()
    raw = [float(r["sqnr_db"]) for r in layers]
    finite = [v for v in raw if math.isfinite(v)] or [0.0]
    top, bottom = max(finite) + 6, min(finite) - 6  # where exact (inf) and broken (-inf) layers are drawn
    vals = [v if math.isfinite(v) else (top if v > 0 else bottom) for v in raw]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(range(len(vals)), vals, "-", color="#8c959f", lw=1)
    ops = sorted({r["op_type"] for r in layers})
    cmap = plt.get_cmap("tab10")
    for k, op in enumerate(ops):
        idx = [i for i, r in enumerate(layers) if r["op_type"] == op]
        ax.scatter(idx, [vals[i] for i in idx], s=18, color=cmap(k % 10), label=op, zorder=3)
    worst = min(range(len(vals)), key=vals.__getitem__)
    side = "left" if worst < len(vals) / 3 else "right" if worst > 2 * len(vals) / 3 else "center"
    ax.annotate(f"lowest: {layers[worst]['layer'][-40:]}", (worst, vals[worst]), fontsize=8, xytext=(0, -22),
                textcoords="offset points", ha=side, arrowprops={"arrowstyle": "->", "color": "#57606a"})
    ax.set_xlabel("layer output, in graph order")
    ax.set_ylabel("SQNR vs float (dB)")
    ax.grid(alpha=0.3)
    ax.margins(y=0.2)
    ax.legend(fontsize=8, ncol=min(len(ops), 8), loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    exact = " (identical layers drawn at the top)" if any(v == math.inf for v in raw) else ""
    ax.set_title(f"Per-layer SQNR: where the error grows (higher is better){exact}", fontsize=10)
    return _png(fig)


def _sensitivity(report: dict[str, Any], folder: Path | None) -> dict[str, Any] | None:
    if isinstance(report.get("sensitivity"), dict):
        return report["sensitivity"]
    path = folder / "sensitivity.json" if folder else None
    if path and path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None
    return None


def _summary(r: dict[str, Any]) -> str:
    rows = [["artifact", _e(r.get("artifact")), ""], ["runtime", _e(r.get("runtime", "–")), ""]]
    s = r["size_bytes"]
    rows.append(["size", f"{s['artifact'] / 1e6:.3f} MB (float {s['float'] / 1e6:.3f} MB)",
                 f"{100 * s.get('ratio', 0):.1f}% of float"])
    if "accuracy" in r:
        a = r["accuracy"]
        rows.append(["top-1 vs labels", f"{100 * a['artifact']['top1']:.2f}% (float {100 * a['float']['top1']:.2f}%)",
                     f"drop {_num(a.get('drop_top1_pt'), '.2f')} pt"])
        rows.append(["top-5 vs labels", f"{100 * a['artifact']['top5']:.2f}% (float {100 * a['float']['top5']:.2f}%)",
                     ""])
    if "agreement" in r:
        g = r["agreement"]
        rows.append(["agreement with float", f"top-1 {100 * g['top1']:.2f}%, top-5 {100 * g['top5']:.2f}%", ""])
    if "error" in r:
        e = r["error"]
        rows.append(["output error", f"SQNR {_num(e['sqnr_db'], '.2f')} dB, cosine {_num(e['cosine'], '.5f')}",
                     f"MSE {_num(e['mse'])}, max abs {_num(e.get('max_abs'))}"])
    kl = r.get("verification", {}).get("kl")
    if kl:
        rows.append(["KL(float || artifact)", f"mean {_num(kl['mean'])}", f"median {_num(kl['median'])}"])
    if "latency" in r:
        lat = r["latency"]
        ms = f"{lat['artifact']['median_ms']:.3f} ms (float {lat['float']['median_ms']:.3f} ms)"
        rows.append(["latency (batch 1)", ms,
                     f"{lat['speedup']:.2f}x; baseline: {_e(lat.get('baseline', lat.get('float_runtime')))}"])
    elif "latency_on_device" in r:
        rows.append(["latency", "measure on a device (see below)", ""])
    if "samples" in r:
        rows.append(["evaluation samples", str(r["samples"]), ""])
    return _table(["measure", "artifact (float)", "difference / note"], rows)


def _budgets(r: dict[str, Any]) -> str:
    b = r.get("budgets")
    if not b:
        return ""
    cls, word = ("ok", "ALL BUDGETS MET") if b["passed"] else ("bad", "BUDGET MISSED: exit code 3")
    rows = [[_e(c["budget"]), _num(c["limit"]), _num(c["value"]),
             f"<span class='{'pass' if c['passed'] else 'fail'}'>{'pass' if c['passed'] else 'FAIL'}</span>",
             _e(c["detail"])] for c in b["checks"]]
    return (f"<div class='banner {cls}'>{word}</div><h2>Budgets</h2>"
            + _table(["budget", "limit", "measured", "result", "detail"], rows, {1, 2}))


def _warnings(r: dict[str, Any]) -> str:
    ws = r.get("warnings") or []
    speed = [w for w in ws if w.startswith("honest-speed")]
    out = "".join(f"<div class='banner bad'>{_e(w)}</div>" for w in speed)
    if ws:
        out += "<h2>Warnings</h2><ul class='w'>" + "".join(f"<li>{_e(w)}</li>" for w in ws) + "</ul>"
    return out


def _crash(r: dict[str, Any]) -> str:
    rows = r.get("crash_test")
    if not rows:
        return ""
    css = {"ok": "pass", "skipped": "skip", "nonfinite-output": "skip"}
    body = [[_e(c["case"]), _e(c.get("input", "")),
             f"<span class='{css.get(c.get('outcome', ''), 'pass' if c['passed'] else 'fail')}'>"
             f"{'pass' if c['passed'] else 'FAIL'} ({_e(c.get('outcome', ''))})</span>", _e(c["detail"])] for c in rows]
    failed = sum(not c["passed"] for c in rows)
    return (f"<h2>Crash test: {len(rows) - failed} of {len(rows)} cases passed</h2>"
            + _table(["case", "input", "result", "detail"], body))


def _layers(r: dict[str, Any]) -> str:
    le = r.get("layer_error")
    if not le:
        return ""
    if not le.get("layers"):
        return f"<h2>Per-layer SQNR</h2><p>{_e(le.get('note', 'no layer matched'))}</p>"
    layers = le["layers"]
    worst = sorted(layers, key=lambda x: float(x["sqnr_db"]))[:10]
    rows = [[_e(x["layer"]), _e(x["op_type"]), _num(x["sqnr_db"], ".2f"), _num(x["cosine"], ".5f")] for x in worst]
    full = [[str(i), _e(x["layer"]), _e(x["op_type"]), _num(x["sqnr_db"], ".2f"), _num(x["mse"])]
            for i, x in enumerate(layers)]
    return (f"<h2>Per-layer SQNR ({len(layers)} layer outputs, {le['samples']} samples, "
            f"{le.get('unmatched', 0)} without a twin in the artifact)</h2>" + _layer_plot(layers)
            + "<p>Lowest SQNR:</p>" + _table(["layer", "op", "SQNR dB", "cosine"], rows, {2, 3})
            + "<details><summary>all layers in graph order</summary>"
            + _table(["#", "layer", "op", "SQNR dB", "MSE"], full, {0, 3, 4}) + "</details>")


def _classes(r: dict[str, Any]) -> str:
    rows = r.get("verification", {}).get("per_class_worst")
    if not rows:
        return ""
    body = [[str(c["class"]), str(c["samples"]), f"{100 * c['float']:.1f}%", f"{100 * c['artifact']:.1f}%",
             f"<span class='{'fail' if c.get('collapsed') else ''}'>{100 * c['drop']:.1f}</span>"] for c in rows]
    head = ["class", "samples", "float", "artifact", "drop (pt)"]
    return "<h2>Classes with the largest top-1 drop</h2>" + _table(head, body, {1, 2, 3, 4})


def _speed_and_size(r: dict[str, Any]) -> str:
    out = ""
    lat = r.get("latency")
    if lat:
        labels = [f"float ({lat['float_runtime']})", f"artifact ({lat['artifact_runtime']})"]
        med = [lat["float"]["median_ms"], lat["artifact"]["median_ms"]]
        p90 = [lat["float"]["p90_ms"], lat["artifact"]["p90_ms"]]
        for name, o in (lat.get("other_baselines") or {}).items():
            labels.insert(-1, name)
            med.insert(-1, o["median_ms"])
            p90.insert(-1, o["p90_ms"])
        errs = [max(p - m, 0.0) for p, m in zip(p90, med, strict=True)]
        colors = ["#8c959f"] * (len(labels) - 1) + ["#cf222e" if lat["speedup"] < 1.0 else "#1a7f37"]
        out += (f"<h2>Latency: {lat['speedup']:.2f}x vs {_e(lat.get('baseline', 'float'))}</h2>"
                + _bars(labels, med, "ms", f"median of {lat['artifact']['runs']} runs, batch 1, "
                        f"{lat.get('threads', '?')} threads (whisker: p90)", errs, colors))
    elif r.get("latency_on_device"):
        d = r["latency_on_device"]
        out += (f"<h2>Latency: measure it on a device</h2><p>{_e(d['why'])}.</p><ul>"
                + "".join(f"<li>{_e(h)}</li>" for h in d["how"]) + "</ul>")
    s = r["size_bytes"]
    out += "<h2>Size</h2>" + _css_bars(["float", "artifact"], [s["float"] / 1e6, s["artifact"] / 1e6], "MB",
                                       f"artifact = {100 * s.get('ratio', 0):.1f}% of float", ["#8c959f", "#0969da"])
    return out


def _css_bars(labels: list[str], values: list[float], unit: str, title: str, colors: list[str]) -> str:
    """Horizontal bars drawn by the page itself (no plotting library: a compile without data imports none)."""
    top = max([*values, 1e-12])
    rows = "".join(
        f"<div style='display:flex;align-items:center;margin:2px 0'><span style='width:6em'>{_e(label)}</span>"
        f"<span style='display:inline-block;height:1.1em;width:{60 * max(v, 0) / top:.1f}%;background:{color}'>"
        f"</span><span>&nbsp;{v:.3g} {_e(unit)}</span></div>"
        for label, v, color in zip(labels, values, colors, strict=True))
    return f"<div class='bars'><p>{_e(title)}</p>{rows}</div>"


def _sens(sens: dict[str, Any] | None) -> str:
    if not sens or not sens.get("layers"):
        return ""
    metric = sens.get("metric", "sqnr")
    top = sens["layers"][:20]
    gains = [float((x.get("gain_full") or x["gain"])[metric]) for x in top]
    return ("<h2>Sensitivity (gain when only this layer stays float)</h2>"
            + _bars([f"{x.get('rank', i + 1)}. {x['layer'][-40:]}" for i, x in enumerate(top)], gains, metric,
                    f"{sens.get('model', '')} on {sens.get('target', '')}, ranked by {metric}"))


def _mixed(r: dict[str, Any]) -> str:
    m = r.get("mixed_precision")
    if not m:
        return ""
    kept = ", ".join(_e(x["name"]) for x in m.get("kept_layers", [])) or "none"
    return (f"<h2>Mixed precision search</h2><p>{_e(m.get('criterion', ''))}: "
            f"<span class='{'pass' if m.get('met') else 'fail'}'>{'met' if m.get('met') else 'MISSED'}</span> "
            f"after {_e(m.get('evaluations', '?'))} lowered candidates; layers kept at "
            f"{_e(m.get('keep_precision', '?'))}: {kept}.</p>")


def render(report: dict[str, Any], folder: Path | None = None) -> str:
    """The page's HTML text; ``folder`` is where to look for sensitivity.json."""
    title = f"irq report: {report.get('model')} on {report.get('target')}"
    parts = [f"<h1>{_e(title)}</h1><div class='meta'>backend {_e(report.get('backend', '–'))}, "
             f"schema {_e(report.get('schema_version'))}, compile wall time "
             f"{_num(report.get('wall_seconds'), '.1f')} s</div>",
             _budgets(report), _warnings(report), "<h2>Summary</h2>", _summary(report), _classes(report),
             _speed_and_size(report), _layers(report), _mixed(report), _sens(_sensitivity(report, folder)),
             _crash(report)]
    layers = report.get("layers") or []
    if layers:
        rows = [[_e(x["name"]), _e(x.get("op_type", "")), _e(x["precision"]), _e(x.get("reason", ""))] for x in layers]
        parts.append(f"<details><summary>precision plan ({len(layers)} layers)</summary>"
                     + _table(["layer", "op", "precision", "reason"], rows) + "</details>")
    body = "\n".join(p for p in parts if p)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>\n")


def write_html(path: Path, report: dict[str, Any]) -> None:
    """Write report.html atomically."""
    atomic_write_text(Path(path), render(report, Path(path).parent))
