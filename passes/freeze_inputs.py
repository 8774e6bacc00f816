"""Turn chosen graph inputs into constants, so what depends only on them folds away.

A model that branches on an input every deployment fixes (Silero VAD's ``If`` on the sample rate
``sr``) keeps its whole network inside If branches, out of reach of quantization and of most
converters. Freezing ``sr=16000`` makes the condition constant: constant folding inlines the
taken branch, and the network is an ordinary graph again. The artifact no longer takes the input.

Option ``values``: ``name:16000|other:0.5`` (scalars; the input's own dtype).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.errors import InputError
from irq.ir.model import QModel
from irq.pipeline.infra import Pass, PassResult


def parse_values(specs: tuple[str, ...]) -> dict[str, float]:
    """``("sr:16000",)`` -> ``{"sr": 16000.0}``."""
    values: dict[str, float] = {}
    for spec in specs:
        name, sep, text = spec.rpartition(":")
        if not sep or not name:
            raise ValueError(f"input value {spec!r} must look like name:16000")
        try:
            values[name] = float(text)
        except ValueError:
            raise ValueError(f"input value {spec!r}: {text!r} is not a number") from None
    return values


@dataclass(frozen=True)
class FreezeInputs(Pass):
    """Replace graph inputs by scalar constants, then fold what they decide (If branches)."""

    name = "freeze-inputs"
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parse_values(self.values)

    def run(self, qmodel: QModel) -> PassResult:
        """Freeze; InputError names an input that does not exist or is not a scalar."""
        from irq.passes.fix_input_shapes import forget_shapes, infer_and_fold, named_inputs

        wanted = parse_values(self.values)
        graph = qmodel.graph
        inputs = named_inputs(qmodel, wanted)
        for name, number in wanted.items():
            value = inputs[name]
            if value.shape is not None and len(value.shape) != 0:
                raise InputError(f"input {name!r} has shape {list(value.shape)}; only scalar inputs can be frozen")
            dtype = value.dtype.numpy() if value.dtype is not None else np.float32
            array = np.array(number, dtype=dtype)
            if array.astype(np.float64) != number:
                raise InputError(f"input {name!r} is {np.dtype(dtype).name}; {number:g} does not fit it")
            graph.inputs.remove(value)
            value.const_value = ir.tensor(array, name=name)
            graph.register_initializer(value)
        rounds = 0
        if wanted:
            forget_shapes(graph)
            rounds = infer_and_fold(qmodel)
        qmodel.analysis.record(self.name, values=wanted, shape_folding_rounds=rounds)
        return PassResult(qmodel, bool(wanted))

    def ensures(self, qmodel: QModel) -> list[str]:
        """No frozen input is still a graph input."""
        left = sorted(set(parse_values(self.values)) & {v.name for v in qmodel.graph.inputs})
        return [f"inputs {', '.join(left)} were to be frozen but are still graph inputs"] if left else []
