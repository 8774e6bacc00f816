"""Named accuracy presets and weight-type overrides of a target.

- ``fast``: the target's own pipeline (calibrated ranges, bias correction where it applies).
- ``accurate``: also cross-layer equalization before calibration (``equalize``) and, where
  irq writes the quantized weights itself (``insert-qdq``), the rounding-error search of each
  weight's scales (``weight-scales``). The TFLite converter quantizes weights itself, so there
  only equalization is added.
- ``max``: accurate, plus learned rounding of those weights (``adaround``; needs torch; minutes
  on a CPU, bounded by its ``seconds`` option).

``with_weights`` gives a target int4 weights (int8 activations stay): ONNX QDQ and Core ML
store int4 values; the TFLite converter has no int4, so it is refused in one line.
"""

from __future__ import annotations

import dataclasses

from irq.errors import InputError
from irq.pipeline.infra import Pass
from irq.pipeline.registry import format_pipeline, make_pass, parse_pipeline
from irq.pipeline.targets import Target
from irq.quant.spec import QType

PRESETS = ("fast", "accurate", "max")
WEIGHT_TYPES = {"int8": QType.INT8, "int4": QType.INT4}


def _names(passes: list[Pass]) -> list[str]:
    return [p.name for p in passes]


def with_preset(target: Target, preset: str | None) -> Target:
    """``target`` with the passes ``preset`` adds (None or ``fast``: unchanged)."""
    if preset is None or preset == "fast":
        return target
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    passes = parse_pipeline(target.pipeline)
    names = _names(passes)
    if "plan-precision" not in names:  # nothing is quantized: nothing to make more accurate
        return dataclasses.replace(target, preset=preset)
    if "equalize" not in names:
        first = min(names.index(n) for n in ("analyze", "calibrate", "plan-precision") if n in names)
        passes.insert(first, make_pass("equalize", {}))
    names = _names(passes)
    if "insert-qdq" in names and "weight-scales" not in names:
        passes.insert(names.index("plan-precision") + 1, make_pass("weight-scales", {}))
    names = _names(passes)
    if preset == "max" and "insert-qdq" in names and "adaround" not in names:
        passes.insert(names.index("weight-scales") + 1, make_pass("adaround", {}))
    return dataclasses.replace(target, pipeline=format_pipeline(passes), preset=preset)


def with_weights(target: Target, weights: str | None) -> Target:
    """``target`` with its weight type overridden (``int4``: int4 values, per the scheme)."""
    if weights is None:
        return target
    if weights not in WEIGHT_TYPES:
        raise InputError(f"weights must be one of {', '.join(WEIGHT_TYPES)}, not {weights!r}")
    if weights == "int4" and target.backend == "tflite":
        raise InputError(f"target {target.name}: the TFLite converter quantizes weights to int8 itself; "
                         "int4 weights need an onnx or coreml target")
    if weights == "int4" and "insert-qdq" not in target.pipeline:
        raise InputError(f"target {target.name} does not write quantized Conv/Gemm weights; int4 weights need a "
                         "static target (onnx-int8, onnx-int8-arm, coreml-w8a8) or coreml-int8")
    scheme = dataclasses.replace(target.scheme, weight=WEIGHT_TYPES[weights])
    name = f"{target.name}+w{weights}" if weights != "int8" else target.name
    return dataclasses.replace(target, scheme=scheme, name=name)
