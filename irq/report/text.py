"""Short human-readable summaries of reports (for the CLI and the demo)."""

from __future__ import annotations

from typing import Any


def one_line(report: dict[str, Any]) -> str:
    """``target  size  top-1  agreement  latency`` in one line."""
    parts = [f"{report['target']}: {report['artifact']}",
             f"size {report['size_bytes']['artifact'] / 1e6:.2f} MB "
             f"({100 * report['size_bytes']['ratio']:.0f}% of float)"]
    acc = report.get("accuracy")
    if acc:
        parts.append(f"top-1 {100 * acc['artifact']['top1']:.2f}% (float {100 * acc['float']['top1']:.2f}%)")
    if "agreement" in report:
        parts.append(f"agreement {100 * report['agreement']['top1']:.2f}%")
    elif "error" in report:
        parts.append(f"cosine {report['error']['cosine']:.5f}")
    lat = report.get("latency")
    if lat:
        parts.append(f"latency {lat['artifact']['median_ms']:.2f} ms ({lat['speedup']:.2f}x vs float)")
    return "; ".join(parts)


def table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of reports (one per target)."""
    head = f"{'target':16} {'size MB':>8} {'ratio':>6} {'top-1':>7} {'float':>7} {'agree':>7} {'ms':>7} {'speedup':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error_message" in r:
            lines.append(f"{r['target']:16} failed: {r['error_message']}")
            continue
        acc = r.get("accuracy", {})
        lat = r.get("latency", {})
        if r.get("runtime") == "coreml-readback":
            lat = {}  # a numpy evaluation of the package, not Core ML: latency is for a device
        lines.append(
            f"{r['target']:16} {r['size_bytes']['artifact'] / 1e6:8.3f} {r['size_bytes']['ratio']:6.2f} "
            f"{100 * acc.get('artifact', {}).get('top1', float('nan')):7.2f} "
            f"{100 * acc.get('float', {}).get('top1', float('nan')):7.2f} "
            f"{100 * r.get('agreement', {}).get('top1', float('nan')):7.2f} "
            f"{lat.get('artifact', {}).get('median_ms', float('nan')):7.3f} {lat.get('speedup', float('nan')):7.2f}")
    if any(r.get("runtime") == "coreml-readback" for r in rows):
        lines.append("Core ML packages were checked by evaluating the read-back program (no Core ML on Linux); "
                     "measure their latency on a device.")
    return "\n".join(lines)
