"""The crash test's child process: runs the cases on the artifact and on float, case by case.

``python -m irq.verify.crashtest_child WORK START`` reads ``WORK/spec.json`` and ``WORK/cases.npz``
(written by :func:`irq.verify.crashtest.crash_test`), saves each case's outputs as ``art<i>.npz`` and
``flt<i>.npz`` and says on stdout when each case starts and ends, so the parent knows which
case a dying process was running.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx


def _say(stage: str, index: int, message: str = "") -> None:
    text = " ".join(message.split())[:300]
    print(f"irq-crashtest {stage} {index}" + (f" {text}" if text else ""), flush=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _runner(spec: dict[str, Any], reference: Any) -> Any:
    if spec["factory"]:
        module, _, fn = spec["factory"].partition(":")
        return getattr(importlib.import_module(module), fn)(Path(spec["artifact"]))
    from irq.pipeline.targets import get_backend

    return get_backend(spec["backend"]).runner(Path(spec["artifact"]), reference)


def _run(runner: Any, rows: dict[str, np.ndarray], spec: dict[str, Any]) -> list[np.ndarray]:
    """Run the case's rows as the data's own feeds (batch axes, whole-row feeds), samples on axis 0."""
    from irq.data import DataSet
    from irq.verify.run import run_dataset

    data = DataSet(rows, batch_axes=spec.get("batch_axes", {}), row_feeds=frozenset(spec.get("row_feeds", [])))
    return run_dataset(runner, data)


def _fixed_shape(runner: Any) -> bool:
    """Whether the artifact declares one fixed size for every non-batch input dim."""
    if hasattr(runner, "session"):  # onnxruntime
        return all(isinstance(d, int) for i in runner.session.get_inputs() for d in i.shape[1:])
    details = getattr(runner, "_in_details", None)  # LiteRT: -1 marks a dynamic dim
    if details is not None:
        return all(int(d) > 0 for v in details.values() for d in list(v["shape_signature"])[1:])
    return hasattr(runner, "io")  # a Core ML package from irq has fixed shapes


def output_limits(runner: Any, spec: dict[str, Any]) -> list[tuple[float, float] | None]:
    """For each output that leaves the artifact as int8/uint8, the float values of qmin and qmax."""
    details = getattr(runner, "_out_details", None)
    if details is not None and hasattr(runner, "outputs"):  # LiteRT int8 I/O
        found = []
        for s in runner.outputs:
            d = details[s.tflite_name]
            scales, zps = d["quantization_parameters"]["scales"], d["quantization_parameters"]["zero_points"]
            info = np.iinfo(d["dtype"]) if np.dtype(d["dtype"]).kind in "iu" else None
            found.append(None if info is None or len(scales) != 1 else
                         ((info.min - int(zps[0])) * float(scales[0]), (info.max - int(zps[0])) * float(scales[0])))
        return found
    if spec["backend"] == "onnx" and not spec["factory"]:
        return _qdq_output_limits(onnx.load(spec["artifact"], load_external_data=False))
    return []


def _qdq_output_limits(model: onnx.ModelProto) -> list[tuple[float, float] | None]:
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 0}
    producers = {o: n for n in model.graph.node for o in n.output}
    found: list[tuple[float, float] | None] = []
    for out in model.graph.output:
        n = producers.get(out.name)
        ok = n is not None and n.op_type == "DequantizeLinear" and len(n.input) == 3 and \
            n.input[1] in inits and n.input[2] in inits
        if not ok:
            found.append(None)
            continue
        scale, zp = float(inits[n.input[1]]), inits[n.input[2]]
        info = np.iinfo(zp.dtype)
        found.append(((info.min - int(zp)) * scale, (info.max - int(zp)) * scale))
    return found


def _child(work: Path, start: int) -> int:
    """Run cases from ``start`` on, saying on stdout when each starts and ends."""
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.frontends import import_model

    spec = json.loads((work / "spec.json").read_text())
    float_bytes = (work / "float.onnx").read_bytes()
    try:
        runner = _runner(spec, import_model(onnx.load_from_string(float_bytes)))
        float_runner = OnnxRunner(float_bytes, threads=1)
        if start == 0:
            (work / "limits.json").write_text(json.dumps(output_limits(runner, spec)))
    except Exception as e:  # any runtime's own load error: reported, not raised
        _say("setup", start, _first_line(e))
        return 0
    fixed = _fixed_shape(runner)
    with np.load(work / "cases.npz") as cases, np.errstate(all="ignore"):
        for i in range(start, len(spec["cases"])):
            feeds = {k: cases[f"{i}/{k}"] for k in spec["cases"][i]["inputs"]}
            _say("start", i)
            if fixed:
                _say("shape", i, "fixed")
            for stage, r, name in (("artifact", runner, "art"), ("float", float_runner, "flt")):
                try:
                    np.savez(work / f"{name}{i}.npz", *_run(r, feeds, spec))
                    _say(stage, i)
                except Exception as e:  # the runtime's own error types
                    _say(stage, i, _first_line(e))
            _say("done", i)
    return 0


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1]), int(sys.argv[2])))
