"""irq's TFLite runner against the bare LiteRT interpreter, int8 and fp32, in one run.

    python bench/tflite_runner.py [--models efficientnet-lite0,resnet50] [--runs 100] [--workdir DIR]

Each model is lowered to tflite-int8 (64 calibration samples) and tflite-fp32; then four callers
take turns in blocks (warm-up, then timed single-sample runs): the bare interpreter
(``set_tensor``, ``invoke``, ``get_tensor`` on a ready input of the right type and layout) and
``TFLiteRunner.run`` (a float NCHW feed: quantization, layout, run, dequantization) for each
artifact. Printed: medians, the int8 speed-up over fp32 either way, and the runner's overhead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _artifacts(name: str, work: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    import irq
    from irq import zoo

    if name == "resnet50":
        from resnet50 import export_resnet50

        model: Any = export_resnet50(work / "resnet50.onnx")
        rng = np.random.default_rng(0)
        from irq.data import DataSet

        calib = DataSet({"input": rng.normal(size=(64, 3, 224, 224)).astype(np.float32)})
    else:
        model = zoo.get(name).onnx_path
        calib = zoo.calibration_data(name, 64)
    int8, fp32 = work / name / "int8", work / name / "fp32"
    if not (int8 / "model.tflite").exists():
        irq.compile(model, "tflite-int8", int8, calib=calib, measure_latency=False)
    if not (fp32 / "model.tflite").exists():
        irq.compile(model, "tflite-fp32", fp32, calib=calib, measure_latency=False)
    return int8 / "model.tflite", fp32 / "model.tflite", calib.feed(0, 1)


def _bare(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    from irq.backends.tflite.offline import THREADS, captured_output

    with captured_output():
        interp = Interpreter(model_path=str(path), num_threads=THREADS)
        interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    ready = np.zeros(inp["shape"], inp["dtype"])

    def call() -> None:
        interp.set_tensor(inp["index"], ready)
        interp.invoke()
        interp.get_tensor(out["index"])
    return call


def measure(name: str, work: Path, runs: int) -> dict[str, float]:
    """Median ms of the four callers on one model, interleaved in 5 rounds."""
    from irq.backends.tflite.runner import TFLiteRunner

    int8, fp32, feed = _artifacts(name, work)
    calls = {"bare int8": _bare(int8), "bare fp32": _bare(fp32)}
    for label, path in (("runner int8", int8), ("runner fp32", fp32)):
        runner = TFLiteRunner(path)
        calls[label] = lambda r=runner: r.run(feed)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(5):
        for label, call in calls.items():
            for _ in range(5):
                call()
            for _ in range(-(-runs // 5)):
                start = time.perf_counter()
                call()
                times[label].append((time.perf_counter() - start) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> int:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="efficientnet-lite0,resnet50")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--workdir", default="/tmp/irq-tflite-runner")
    args = ap.parse_args()
    print("| model | bare int8 ms | bare fp32 ms | bare x | runner int8 ms | runner fp32 ms | runner x | "
          "runner overhead int8 ms | load before, after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        before = os.getloadavg()[0]
        m = measure(name, Path(args.workdir), args.runs)
        print(f"| {name} | {m['bare int8']:.2f} | {m['bare fp32']:.2f} | {m['bare fp32'] / m['bare int8']:.2f} | "
              f"{m['runner int8']:.2f} | {m['runner fp32']:.2f} | {m['runner fp32'] / m['runner int8']:.2f} | "
              f"{m['runner int8'] - m['bare int8']:+.2f} | {before:.1f}, {os.getloadavg()[0]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
