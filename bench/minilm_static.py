"""all-MiniLM-L6-v2: static int8 under a cosine budget (int16 where needed) against onnx-dynamic, one run.

Compiles onnx-dynamic and onnx-int8 with ``criterion cosine >= 0.99`` (the budget search keeps
what it must at int16), then times float, dynamic and static in onnxruntime, interleaved, batch 1,
on the same sentences, and prints cosine to float, size and the latency ratios.

    .venv/bin/python bench/minilm_static.py [--threshold 0.99] [--runs 60]
"""

from __future__ import annotations

import argparse

from common import machine, scratch, timed

import irq
from irq import zoo
from irq.backends.onnx_qdq import OnnxRunner
from irq.sensitivity.analysis import SensitivityOptions
from irq.sensitivity.metrics import Criterion
from irq.sensitivity.mixed import SearchOptions
from irq.verify.checks import VerifyOptions
from irq.verify.run import interleaved_latency

CHECKS = VerifyOptions(measure_latency=False, crash_test=False, layer_error=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threshold", type=float, default=0.99)
    ap.add_argument("--runs", type=int, default=60)
    args = ap.parse_args()
    tmp = scratch()
    model = zoo.get("minilm").onnx_path
    calib, evaluation = zoo.calibration_data("minilm"), zoo.eval_data("minilm")
    dynamic, dyn_s = timed(lambda: irq.compile(model, "onnx-dynamic", tmp / "dynamic", eval=evaluation,
                                               checks=CHECKS))
    search = SearchOptions(SensitivityOptions(subset=16, confirm=0, workers=2), max_evals=10, full_curve=False)
    static, static_s = timed(lambda: irq.compile(model, "onnx-int8", tmp / "static", calib=calib, eval=evaluation,
                                                 criterion=Criterion("cosine", args.threshold), search=search,
                                                 checks=CHECKS))
    runners = [OnnxRunner(str(model)), OnnxRunner(str(tmp / "dynamic" / "model.onnx")),
               OnnxRunner(str(tmp / "static" / "model.onnx"))]
    f, d, s = interleaved_latency(runners, evaluation, runs=args.runs)
    mixed = static["mixed_precision"]
    kept = sum(x["reason"].startswith("sensitivity") for x in static["layers"])
    print(f"minilm, {len(calib)} calibration / {len(evaluation)} evaluation sentences; {machine()}")
    print(f"{'artifact':34} {'cosine':>7} {'size':>6} {'median ms':>10} {'p90 ms':>7} {'compile s':>10}")
    print(f"{'float':34} {1.0:7.4f} {1.0:6.3f} {f['median_ms']:10.2f} {f['p90_ms']:7.2f} {'':>10}")
    print(f"{'onnx-dynamic':34} {dynamic['error']['cosine']:7.4f} {dynamic['size_bytes']['ratio']:6.3f} "
          f"{d['median_ms']:10.2f} {d['p90_ms']:7.2f} {dyn_s:10.1f}")
    label = f"onnx-int8, {kept} layers at {mixed['keep_precision']}"
    print(f"{label:34} {static['error']['cosine']:7.4f} {static['size_bytes']['ratio']:6.3f} "
          f"{s['median_ms']:10.2f} {s['p90_ms']:7.2f} {static_s:10.1f}")
    print(f"static / dynamic latency {s['median_ms'] / d['median_ms']:.2f}x; "
          f"static / float {s['median_ms'] / f['median_ms']:.2f}x; budget met: {mixed['met']}")


if __name__ == "__main__":
    main()
