"""AMD Quark (ONNX) as an anchor tool: run by ``bench/anchors.py`` with Quark's own interpreter.

Quark pins its own onnx/onnxruntime/torch, so it lives in its own environment
(``make quark-env``: ``.venv-quark`` from ``bench/quark-requirements.txt``) and this file imports
nothing of irq. It quantizes the float ONNX with the calibration ``.npz`` (one sample per step),
writes ``OUT/model.onnx`` and prints one ``ANCHOR {json}`` line like the other anchor tools.

    .venv-quark/bin/python bench/quark_worker.py TOOL MODEL.onnx CALIB.npz OUT

Tools (all QDQ, uint8 activations, int8 per-channel weights, the layout irq and ORT's
per-channel row use): ``quark-pc`` (Quark's U8S8_AAWS preset: percentile calibration, no CLE),
``quark-pc-cle`` (the same with cross-layer equalisation), ``quark-adaround`` (U8S8_AAWS with
AdaRound fine-tuning of the weights, its default parameters but as many iterations as
``IRQ_QUARK_ADAROUND_ITERS``, default 1000).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx


class NpzReader:
    """Quark's calibration reader: the .npz's samples one at a time, batch 1."""

    def __init__(self, path: str) -> None:
        data = np.load(path)
        self.arrays = {k: data[k] for k in data.files}
        self.count = min(len(a) for a in self.arrays.values())
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= self.count:
            return None
        sample = {k: a[self.index:self.index + 1] for k, a in self.arrays.items()}
        self.index += 1
        return sample

    def rewind(self) -> None:
        self.index = 0


def peak_rss_mb() -> float:
    """VmHWM of this process (MB): ru_maxrss would carry the parent's peak over fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config_for(tool: str) -> Any:
    """The Quark preset of one anchor tool, per-channel as the other per-channel rows."""
    from quark.onnx.quantization.config.custom_config import get_default_config

    if tool == "quark-adaround":
        base = get_default_config("U8S8_AAWS_ADAROUND")
        fast = dict(base.extra_options["FastFinetune"], NumIterations=int(os.environ.get("IRQ_QUARK_ADAROUND_ITERS",
                                                                                          "1000")))
        return dataclasses.replace(base, per_channel=True, include_cle=False,
                                   extra_options=dict(base.extra_options, FastFinetune=fast))
    base = get_default_config("U8S8_AAWS")
    return dataclasses.replace(base, per_channel=True, include_cle=tool == "quark-pc-cle")


def main() -> None:
    tool, model, calib, out = sys.argv[1:5]
    from quark.onnx import ModelQuantizer
    from quark.onnx.quantization.config.config import Config

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(out_dir)  # Quark writes its side files (quantized_info.csv, *.data) into the cwd
    path = out_dir / "model.onnx"
    start = time.perf_counter()
    ModelQuantizer(Config(global_quant_config=config_for(tool))).quantize_model(model, str(path), NpzReader(calib))
    seconds = time.perf_counter() - start
    proto = onnx.load(str(path))
    del proto.graph.value_info[:]  # Quark's fine-tuned graphs keep stale shapes that onnxruntime rejects
    onnx.save(proto, str(path))
    rss = peak_rss_mb()
    print("ANCHOR " + json.dumps({"tool": tool, "artifact": str(path), "seconds": seconds, "peak_rss_mb": rss}))


if __name__ == "__main__":
    main()
