"""Static PTQ wall time and calibration memory on a ResNet-50-shaped model, irq vs onnxruntime.

Each measurement runs in a fresh process (peak RSS only grows), on the same ONNX file and the
same calibration .npz (random images; time and memory only):

    .venv/bin/python bench/ptq_time_memory.py [--samples 100,500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import machine, peak_rss_mb, scratch, timed


def worker(kind: str, model: Path, data: Path, samples: int) -> dict:
    from irq.data import load_npz

    calib = load_npz(data).head(samples) if kind == "ort" else load_npz(data)
    base = peak_rss_mb()
    if kind == "irq":
        import irq

        _, secs = timed(lambda: irq.compile(model, "onnx-int8", scratch(), calib=calib))
    else:
        from common import ort_quantize_static

        _, secs = timed(lambda: ort_quantize_static(model, calib, scratch() / "ort.onnx"))
    return {"kind": kind, "samples": samples, "seconds": secs, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", default="100,500")
    ap.add_argument("--skip-ort", action="store_true")
    ap.add_argument("--worker", nargs=4, metavar=("KIND", "MODEL", "DATA", "N"))
    args = ap.parse_args()
    if args.worker:
        kind, model, data, n = args.worker
        print(json.dumps(worker(kind, Path(model), Path(data), int(n))))
        return
    from resnet50 import export_resnet50

    tmp = scratch()
    model = export_resnet50(tmp / "resnet50.onnx")
    counts = [int(s) for s in args.samples.split(",")]
    rng = np.random.default_rng(0)
    files = {}
    for n in counts:
        files[n] = tmp / f"calib{n}.npz"
        np.savez(files[n], input=rng.normal(size=(n, 3, 224, 224)).astype(np.float32))
    rows = []
    for n in counts:
        for kind in ("irq", "ort"):
            if kind == "ort" and n != counts[0]:
                continue
            out = subprocess.run([sys.executable, __file__, "--worker", kind, str(model), str(files[n]), str(n)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"ResNet-50-shaped, static int8 PTQ (minmax); {machine()}")
    for r in rows:
        print(f"{r['kind']:5} samples={r['samples']:4} wall={r['seconds']:6.1f}s peak_rss={r['peak_rss_mb']:7.0f} MB")
    irq100 = next(r for r in rows if r["kind"] == "irq" and r["samples"] == counts[0])
    ort100 = next(r for r in rows if r["kind"] == "ort")
    print(f"irq/ort wall time ratio at {counts[0]} samples: {irq100['seconds'] / ort100['seconds']:.2f}")
    if len(counts) > 1:
        irq_big = next(r for r in rows if r["kind"] == "irq" and r["samples"] == counts[-1])
        growth = irq_big["peak_rss_mb"] / irq100["peak_rss_mb"] - 1
        print(f"irq peak RSS growth {counts[0]} -> {counts[-1]} samples: {100 * growth:+.1f}%")


if __name__ == "__main__":
    main()
