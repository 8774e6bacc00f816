"""irq against the int8 tools people would otherwise use, side by side, in one run.

For each model every tool quantizes the same float ONNX with the same calibration samples, in
its own process (compile seconds and peak RSS per tool); this process then runs every artifact
in its own runtime (onnxruntime, or LiteRT with XNNPACK) on the same held-out data and times
them all taking turns, batch 1, two threads. Ratios are against onnxruntime's quantize_static
defaults (accuracy, size, time, memory) and against the float model in the same runtime (speed).

    .venv/bin/python bench/anchors.py [--models fashion-cnn,efficientnet-lite0,resnet50]
        [--tools irq-onnx,irq-tflite,ort-default,ort-pc,ort-pc-pct,onnx2tf-oiqt,tflite-plain]
        [--tools ...,irq-onnx-accurate,irq-onnx-max,irq-onnx-adaround,quark-pc,quark-pc-cle,quark-adaround]
            (irq's presets; AMD Quark: `make quark-env` first)
        [--onnx2tf-on fashion-cnn,efficientnet-lite0] [--fashion-full] [--runs 30] [--md FILE]

ResNet-50 has random weights (bench/resnet50.py): its rows are for time, memory, size and speed;
its "agreement" only says how far each artifact is from float, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from anchor_tools import BASELINES, TOOLS, worker_main
from common import machine, scratch

from irq.data import DataSet

QUARK_PYTHON = Path(__file__).resolve().parent.parent / ".venv-quark" / "bin" / "python"
QUARK_TOOLS = ("quark-pc", "quark-pc-cle", "quark-adaround")


def prepare(name: str, tmp: Path, args: argparse.Namespace) -> tuple[Path, Path, DataSet]:
    """Float ONNX path, calibration .npz path and held-out evaluation data of a model."""
    from irq import zoo

    if name == "resnet50":
        from resnet50 import export_resnet50

        model = export_resnet50(tmp / "resnet50.onnx")
        rng = np.random.default_rng(0)
        calib = {"input": rng.normal(size=(args.resnet_calib, 3, 224, 224)).astype(np.float32)}
        held = DataSet({"input": rng.normal(size=(32, 3, 224, 224)).astype(np.float32)})
    else:
        model = zoo.get(name).onnx_path
        c = zoo.calibration_data(name, args.calib)
        calib = {k: np.asarray(v) for k, v in c.inputs.items()}
        held = zoo.eval_data(name, full=args.fashion_full) if name == "fashion-cnn" else zoo.eval_data(name)
    path = tmp / f"{name}-calib.npz"
    np.savez(path, **calib)
    return Path(model), path, held


def run_worker(tool: str, model: Path, calib: Path, out: Path, timeout: float, reuse: bool) -> dict[str, Any]:
    """One tool in a fresh process; its JSON line, plus the process's own wall time (kept in ``out``)."""
    saved = out / "result.json"
    if reuse and saved.exists():
        return json.loads(saved.read_text())
    result = _worker(tool, model, calib, out, timeout)
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result))
    return result


def _worker(tool: str, model: Path, calib: Path, out: Path, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", tool, str(model), str(calib), str(out)]
    if tool in QUARK_TOOLS:  # Quark pins its own onnx/onnxruntime/torch: its own environment
        if not QUARK_PYTHON.exists():
            return {"tool": tool, "error": f"{QUARK_PYTHON} missing: run `make quark-env`"}
        cmd = [str(QUARK_PYTHON), str(Path(__file__).with_name("quark_worker.py")), tool, str(model), str(calib),
               str(out)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    except subprocess.TimeoutExpired:
        return {"tool": tool, "error": f"timed out after {timeout:.0f} s"}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ANCHOR ")), None)
    if line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        why = "killed (SIGKILL: the OOM killer?)" if proc.returncode == -9 else \
            f"exited {proc.returncode}: {tail[:200]}"
        return {"tool": tool, "error": f"worker {why}", "process_s": time.perf_counter() - start}
    return {**json.loads(line[7:]), "process_s": time.perf_counter() - start}


def runner_for(path: Path) -> Any:
    """The artifact in its own runtime, taking ONNX-layout inputs."""
    if path.suffix == ".tflite":
        from irq.backends.tflite.runner import TFLiteRunner

        return TFLiteRunner(path)
    from irq.backends.onnx_qdq import OnnxRunner

    return OnnxRunner(str(path), threads=2)


def evaluate(rows: list[dict[str, Any]], model: Path, held: DataSet, runs: int) -> None:
    """Accuracy, agreement, KL, SQNR and size per artifact; then all latencies taking turns."""
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.verify.metrics import accuracy, agreement, error, kl_divergence
    from irq.verify.run import interleaved_latency, run_dataset

    float_runner = OnnxRunner(model.read_bytes(), threads=2)
    ref = run_dataset(float_runner, held)[0]
    timed_rows, runners = [], [float_runner]
    for r in rows:
        if "artifact" not in r:
            continue
        try:
            runner = runner_for(Path(r["artifact"]))
            out = run_dataset(runner, held)[0]
        except Exception as e:  # an artifact its own runtime refuses is a finding, not a crash
            r["error"] = f"does not run: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            continue
        art = Path(r["artifact"])
        r["size"] = sum(p.stat().st_size for p in art.parent.glob(art.name + "*") if p.suffix != ".json")
        r["size_ratio"] = r["size"] / model.stat().st_size
        r.update(agreement=agreement(ref, out)["top1"], kl=float(kl_divergence(ref, out).mean()),
                 sqnr=error(ref, out)["sqnr_db"])
        if held.labels is not None:
            r["top1"], r["float_top1"] = accuracy(out, held.labels)["top1"], accuracy(ref, held.labels)["top1"]
        timed_rows.append(r)
        runners.append(runner)
    load = os.getloadavg()[0]
    lat = interleaved_latency(runners, held, runs=runs, warmup=5)
    rows.append({"tool": "_load", "before": load, "after": os.getloadavg()[0]})
    float_ms = lat[0]["median_ms"]
    for r, t in zip(timed_rows, lat[1:], strict=True):
        r["ms"], r["p90"], r["speedup_ort_fp32"] = t["median_ms"], t["p90_ms"], float_ms / t["median_ms"]
    fp32 = next((r for r in timed_rows if r["tool"] == "irq-tflite-fp32"), None)
    for r in timed_rows:
        if fp32 is not None and r["artifact"].endswith(".tflite"):
            r["speedup_tflite_fp32"] = fp32["ms"] / r["ms"]
    rows.insert(0, {"tool": "float (onnxruntime)", "ms": float_ms, "p90": lat[0]["p90_ms"], "size_ratio": 1.0,
                    "size": model.stat().st_size, "agreement": 1.0, "kl": 0.0, "sqnr": float("inf"),
                    **({"top1": accuracy(ref, held.labels)["top1"]} if held.labels is not None else {})})


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


def table(name: str, rows: list[dict[str, Any]], samples: int) -> str:
    """A markdown table with ratios against ort-default."""
    base = next((r for r in rows if r["tool"] == "ort-default" and "ms" in r), None)
    head = ("| tool | top-1 | agree | KL | SQNR dB | size MB | size/float | ms (p90) | x ORT fp32 | x LiteRT fp32 "
            "| compile s | peak RSS MB | time/ORT | RSS/ORT |")
    load = next((r for r in rows if r["tool"] == "_load"), None)
    note = f"; 1-min load average {load['before']:.1f} before and {load['after']:.1f} after timing" if load else ""
    lines = [f"**{name}** ({samples} held-out samples{note})", "", head, "|" + "---|" * 14]
    f = lambda v, fmt: "–" if v is None else format(v, fmt)  # noqa: E731
    for r in rows:
        if r["tool"] == "_load":
            continue
        if "ms" not in r:
            lines.append(f"| {r['tool']} | failed: {r.get('error', '?')} |" + " |" * 12)
            continue
        t_ratio = r["seconds"] / base["seconds"] if base and "seconds" in r else None
        m_ratio = r["peak_rss_mb"] / base["peak_rss_mb"] if base and "peak_rss_mb" in r else None
        top1 = f"{100 * r['top1']:.2f}%" if "top1" in r else "–"
        lines.append(
            f"| {r['tool']} | {top1} | {100 * r['agreement']:.2f}% | {r['kl']:.4f} | {f(r['sqnr'], '.1f')} "
            f"| {r['size'] / 1e6:.2f} | {r['size_ratio']:.3f} | {_ms(r['ms'])} ({_ms(r['p90'])}) "
            f"| {f(r.get('speedup_ort_fp32'), '.2f')} | {f(r.get('speedup_tflite_fp32'), '.2f')} "
            f"| {f(r.get('seconds'), '.1f')} | {f(r.get('peak_rss_mb'), '.0f')} | {f(t_ratio, '.2f')} "
            f"| {f(m_ratio, '.2f')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="fashion-cnn,efficientnet-lite0,resnet50")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--onnx2tf-on", default="fashion-cnn,efficientnet-lite0",
                    help="models onnx2tf's own int8 conversion runs on (400 s for ResNet-50)")
    ap.add_argument("--pct-on", default="fashion-cnn",
                    help="models ORT's Percentile calibration runs on (it keeps every activation of every "
                         "sample: 17 GB and the OOM killer on EfficientNet-Lite0 with 300 samples)")
    ap.add_argument("--calib", type=int, default=300, help="calibration samples (zoo models)")
    ap.add_argument("--resnet-calib", type=int, default=64)
    ap.add_argument("--fashion-full", action="store_true", help="the 10k Fashion-MNIST test set (else 1k)")
    ap.add_argument("--runs", type=int, default=60, help="timed runs per artifact (in 3 rounds)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--md", help="also write the tables to this markdown file")
    ap.add_argument("--workdir", help="keep artifacts here (default: a fresh temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="reuse the artifacts in --workdir: only re-evaluate")
    ap.add_argument("--worker", nargs=4, metavar=("TOOL", "MODEL", "CALIB", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(*args.worker)
        return
    tmp = Path(args.workdir) if args.workdir else scratch()
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sections = [f"Machine: {machine()}; command: `{' '.join(['.venv/bin/python', *sys.argv])}`"]
    for name in args.models.split(","):
        model, calib, held = prepare(name, tmp, args)
        only = {"onnx2tf-oiqt": args.onnx2tf_on.split(","), "ort-pc-pct": args.pct_on.split(",")}
        tools = [t for t in args.tools.split(",") if name in only.get(t, [name])]
        rows = []
        for tool in (*tools, *BASELINES):
            rows.append(run_worker(tool, model, calib, tmp / name / tool, args.timeout, args.reuse))
            print(f"[{time.perf_counter() - started:6.0f} s] {name} {tool}: "
                  f"{rows[-1].get('error') or format(rows[-1]['seconds'], '.1f')}", file=sys.stderr, flush=True)
        evaluate(rows, model, held, args.runs)
        sections.append(table(name, rows, len(held)))
        print(sections[-1] + "\n", flush=True)
    sections.append(f"Total bench wall time: {time.perf_counter() - started:.0f} s")
    if args.md:
        Path(args.md).write_text("\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
