"""onnx-int8 on corpus models with and without cross-layer equalization, by weights and by activations.

    PYTHONPATH=. python bench/equalize_modes.py [--models mp-face-detection,efficientnet-lite1,...]

Four pipelines per model, each scored with the model's own task metric against float on its
held-out corpus data: fast (the default), accurate with equalization by weights, accurate with
equalization by activations (what `--preset accurate` runs), and fast plus equalization by
activations. Also prints each output's SQNR.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

BASE = ("shape-inference,fold-constants,cleanup,fold-bn,fold-pad,{eq}analyze,calibrate{{input-means=64}},"
        "plan-precision,{ws}bias-correct,insert-qdq")
VARIANTS = {"fast": BASE.format(eq="", ws=""),
            "accurate, CLE by weights": BASE.format(eq="equalize{by=weights},", ws="weight-scales,"),
            "accurate, CLE by activations": BASE.format(eq="equalize{by=activations},", ws="weight-scales,"),
            "fast + CLE by activations": BASE.format(eq="equalize{by=activations},", ws="")}
MODELS = ("mp-face-detection,mp-hand-landmark-lite,efficientnet-lite1,mp-selfie-segmentation,silero-vad,ddddocr-rec,"
          "fer-emotion")


def main() -> int:
    """Command line."""
    from corpus import score
    from wild.models import CAL, EVAL, cached_data, registry

    import irq
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.data.conform import conform
    from irq.frontends import import_model
    from irq.verify.checks import VerifyOptions
    from irq.verify.run import run_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--out", default="/tmp/irq-equalize-modes")
    args = ap.parse_args()
    checks = VerifyOptions(measure_latency=False, crash_test=False, layer_error=False)
    print("| model (metric) | " + " | ".join(VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 1) + "|")
    for name in args.models.split(","):
        m = registry()[name]
        spec, calib, evaluation = m.model(), cached_data(m, CAL), cached_data(m, EVAL)
        float_model = import_model(spec)
        data = conform(evaluation, float_model.graph, "evaluation", m.options.get("batch_axes"))
        ref = run_dataset(OnnxRunner(float_model.to_bytes()), data)
        cells = []
        for label, pipeline in VARIANTS.items():
            start = time.perf_counter()
            report = irq.compile(spec, "onnx-int8", Path(args.out) / name / label.replace(" ", "_"), calib=calib,
                                 eval=evaluation, measure_latency=False, pipeline=pipeline, checks=checks, **m.options)
            out = run_dataset(OnnxRunner(Path(report["artifact"]).read_bytes()), data)
            value, _ = score(m, ref, out, data.labels)
            sqnr = [10 * np.log10((r ** 2).mean() / max(((r - o) ** 2).mean(), 1e-30))
                    for r, o in zip(ref, out, strict=True)]
            cells.append(f"{value:.3f} ({', '.join(f'{s:.1f}' for s in sqnr)} dB; {time.perf_counter() - start:.0f} s)")
        print(f"| {name} ({m.metric_name}) | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
