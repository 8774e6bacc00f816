"""What the driver does to the model's inputs before the passes: freeze some, fix the shapes of others.

Frozen inputs (``--input-value sr=16000``) become constants; the data must agree with them.

A target whose backend needs static shapes (TFLite, Core ML) gets every symbolic dimension
fixed before the passes run; other targets only when the user asks (``--input-shape``). Shapes
not given come from the calibration data (else the evaluation data): a one-row feed, so the
batch becomes 1 and the other dimensions are the data's, which every sample of an array shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.data import DataSet
from irq.errors import InputError


@dataclass(frozen=True)
class InputShape:
    """A fixed shape for one input and where it came from."""

    dims: tuple[int, ...]
    source: str  # "--input-shape" | "calibration data" | "evaluation data"


def parse_shape_flag(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=1,3,320,320`` -> ``("NAME", (1, 3, 320, 320))``; ``NAME=`` is a scalar."""
    name, eq, dims = text.rpartition("=")
    if not eq or not name:
        raise InputError(f"--input-shape {text!r}: expected NAME=1,3,320,320")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip()) if dims.strip() else ()
    except ValueError:
        raise InputError(f"--input-shape {text!r}: dimensions must be integers") from None
    if any(d < 1 for d in shape):
        raise InputError(f"--input-shape {text!r}: dimensions must be at least 1")
    return name, shape


def _symbolic(value: ir.Value) -> bool:
    return value.shape is None or any(not isinstance(d, int) for d in value.shape)


def resolve(graph: ir.Graph, given: dict[str, tuple[int, ...]] | None, data: list[tuple[str, DataSet | None]],
            static: bool, frozen: frozenset[str] = frozenset()) -> dict[str, InputShape]:
    """The shapes to fix: every given one, plus (when ``static``) each still-symbolic input from the data.

    InputError names an input that needs a shape nobody supplied.
    """
    inputs = {v.name or "": v for v in graph.inputs if v.const_value is None and v.name not in frozen}
    given = dict(given or {})
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise InputError(f"--input-shape names {', '.join(unknown)}, which the model does not take "
                         f"(inputs: {', '.join(inputs)})")
    out = {name: InputShape(dims, "--input-shape") for name, dims in given.items()}
    if not static:
        return out
    feeds = [(role, d.feed(0, 1)) for role, d in data if d is not None]
    for name, value in inputs.items():
        if name in out or not _symbolic(value):
            continue
        found = next(((role, f[name]) for role, f in feeds if name in f), None)
        if found is None:
            dims = [d if isinstance(d, int) else "?" for d in (value.shape or [])]
            raise InputError(f"input {name!r} has dynamic dimensions {dims} and this target needs static shapes: "
                             f"give --input-shape {name}=... or calibration data")
        out[name] = InputShape(tuple(int(d) for d in found[1].shape), f"{found[0]} data")
    return out


def parse_value_flag(text: str) -> tuple[str, float]:
    """``NAME=16000`` -> ``("NAME", 16000.0)``."""
    name, eq, number = text.rpartition("=")
    try:
        if not eq or not name:
            raise ValueError
        return name, float(number)
    except ValueError:
        raise InputError(f"--input-value {text!r}: expected NAME=NUMBER") from None


def check_frozen(graph: ir.Graph, values: dict[str, float], data: list[tuple[str, DataSet | None]]) -> None:
    """InputError unless each frozen input exists, and every data row holds the frozen value."""
    inputs = {v.name or "" for v in graph.inputs if v.const_value is None}
    unknown = sorted(set(values) - inputs)
    if unknown:
        raise InputError(f"--input-value names {', '.join(unknown)}, which the model does not take "
                         f"(inputs: {', '.join(sorted(inputs))})")
    for role, d in data:
        if d is None:
            continue
        for name, number in values.items():
            if name not in d.inputs:
                continue
            rows = np.asarray(d.inputs[name]).reshape(len(d), -1)
            bad = np.flatnonzero(~np.all(rows == number, axis=1))
            if bad.size:
                raise InputError(f"{d.source}: the {role} data has {name}={rows[bad[0]].ravel()[0]:g} in row "
                                 f"{int(bad[0])}, but --input-value freezes {name}={number:g}")


def pass_spec(shapes: dict[str, InputShape], frozen: dict[str, float] | None = None) -> str:
    """The ``freeze-inputs`` and ``fix-input-shapes`` pipeline elements ('' when there is nothing to do)."""
    from irq.passes.fix_input_shapes import FixInputShapes, format_shapes
    from irq.passes.freeze_inputs import FreezeInputs

    parts = []
    if frozen:
        parts.append(FreezeInputs(tuple(f"{k}:{v:g}" for k, v in frozen.items())).spec())
    if shapes:
        parts.append(FixInputShapes(tuple(format_shapes({k: v.dims for k, v in shapes.items()}))).spec())
    return ",".join(parts)


def report_section(shapes: dict[str, InputShape]) -> dict[str, dict[str, object]]:
    """What report.json says about the fixed shapes."""
    return {name: {"shape": list(s.dims), "source": s.source} for name, s in shapes.items()}
