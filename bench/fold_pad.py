"""fold-pad on EfficientNet-Lite0 onnx-int8: the same compile with and without it, timed interleaved.

TensorFlow-exported networks spell SAME padding as explicit Pads; folded into the Convs they
cost neither a pass over the activation nor a Q/DQ pair. One run, one process, the same data:

    .venv/bin/python bench/fold_pad.py [--calib 100] [--eval 100] [--runs 200]
"""

from __future__ import annotations

import argparse
import collections
import os
import time

import numpy as np
import onnx
from common import machine, scratch

import irq
from irq.ir.ort import make_session
from irq.zoo import calibration_data, eval_data


def main() -> None:
    """Compile both ways, print Pad/Q counts, agreement, SQNR, then interleaved latency and the ratio."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=100)
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    calib, ev = calibration_data("efficientnet-lite0", args.calib), eval_data("efficientnet-lite0", args.eval)
    out, sessions = scratch(), {}
    print(f"{machine()}; load average before {os.getloadavg()[0]:.2f}")
    for name, disabled in (("with fold-pad", ()), ("without fold-pad", ("fold-pad",))):
        report = irq.compile("efficientnet-lite0", "onnx-int8", out / name.replace(" ", "_"), calib=calib, eval=ev,
                             measure_latency=False, disable_passes=disabled)
        ops = collections.Counter(n.op_type for n in onnx.load(report["artifact"]).graph.node)
        print(f"{name:17} Pad {ops['Pad']:2d}  QuantizeLinear {ops['QuantizeLinear']:3d}  agreement "
              f"{report['agreement']['top1']:.3f}  SQNR {report['error']['sqnr_db']:.2f} dB")
        sessions[name] = make_session(report["artifact"], threads=2)
    feed = {next(iter(sessions.values())).get_inputs()[0].name: np.asarray(next(iter(ev.inputs.values()))[:1])}
    times: dict[str, list[float]] = collections.defaultdict(list)
    for session in sessions.values():
        for _ in range(20):
            session.run(None, feed)
    for _ in range(args.runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name:17} median {1e3 * np.median(values):.2f} ms  p90 {1e3 * np.percentile(values, 90):.2f} ms")
    ratio = np.median(times["without fold-pad"]) / np.median(times["with fold-pad"])
    print(f"without / with: {ratio:.2f}x (batch 1, 2 threads, interleaved); load average after "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
