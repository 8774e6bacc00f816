"""A read/write view of a .tflite flatbuffer, through the schema TensorFlow ships.

Used to read operators, tensor types and quantization parameters after conversion, and to
rewrite calibration statistics before quantization. Only the main subgraph (the serving
signature's) is inspected: onnx2tf models have no control-flow subgraphs for the ops irq lowers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_BUILTIN_NAMES: dict[int, str] = {}
_TYPE_NAMES: dict[int, str] = {}


@dataclass(frozen=True)
class OpView:
    """One operator of the main subgraph."""

    index: int
    op_type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


class FlatModel:
    """A parsed .tflite model (object API) with helpers for the main subgraph."""

    def __init__(self, data: bytes) -> None:
        from tensorflow.lite.tools import flatbuffer_utils

        self.obj: Any = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
        sigs = self.obj.signatureDefs or []
        self.subgraph_index = sigs[0].subgraphIndex if sigs else 0
        self.graph: Any = self.obj.subgraphs[self.subgraph_index]
        _load_enum_names()

    def to_bytes(self) -> bytes:
        """Serialize the (possibly modified) model."""
        from tensorflow.lite.tools import flatbuffer_utils

        return bytes(flatbuffer_utils.convert_object_to_bytearray(self.obj))

    def ops(self) -> list[OpView]:
        """The operators of the main subgraph in execution order."""
        views = []
        for i, op in enumerate(self.graph.operators or []):
            code = self.obj.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = _BUILTIN_NAMES.get(builtin, str(builtin))
            if name == "CUSTOM" and code.customCode:
                name = f"CUSTOM:{_text(code.customCode)}"
            views.append(OpView(i, name, tuple(int(t) for t in _list(op.inputs)),
                                tuple(int(t) for t in _list(op.outputs))))
        return views

    def tensor(self, index: int) -> Any:
        """The TensorT at ``index``."""
        return self.graph.tensors[index]

    def tensor_name(self, index: int) -> str:
        """A tensor's name as text."""
        return _text(self.tensor(index).name)

    def type_name(self, index: int) -> str:
        """A tensor's element type (``FLOAT32``, ``INT8``, ...)."""
        return _TYPE_NAMES.get(self.tensor(index).type, str(self.tensor(index).type))

    def is_constant(self, index: int) -> bool:
        """True when the tensor's data is stored in the model (weights, biases, shapes)."""
        buffer = self.obj.buffers[self.tensor(index).buffer]
        return bool(buffer is not None and ((buffer.data is not None and len(buffer.data) > 0)
                                            or buffer.size > 0))

    def activations(self) -> list[int]:
        """Indices of run-time tensors: subgraph inputs and operator outputs."""
        seen = [int(i) for i in _list(self.graph.inputs)]
        for op in self.ops():
            seen.extend(op.outputs)
        return list(dict.fromkeys(i for i in seen if i >= 0 and not self.is_constant(i)))

    def signature(self) -> tuple[dict[str, int], dict[str, int]]:
        """Signature input and output names -> tensor indices (empty without signatures)."""
        sigs = self.obj.signatureDefs or []
        if not sigs:
            return {}, {}
        sig = sigs[0]
        return ({_text(t.name): int(t.tensorIndex) for t in sig.inputs or []},
                {_text(t.name): int(t.tensorIndex) for t in sig.outputs or []})

    def quant_params(self, index: int) -> tuple[list[float], list[int]]:
        """A tensor's scales and zero points (empty lists when it is not quantized)."""
        q = self.tensor(index).quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return [], []
        return [float(s) for s in q.scale], [int(z) for z in _list(q.zeroPoint)]

    def min_max(self, index: int) -> tuple[float, float] | None:
        """Calibration statistics recorded on a tensor of a calibrated model."""
        q = self.tensor(index).quantization
        if q is None or q.min is None or q.max is None or len(q.min) != 1 or len(q.max) != 1:
            return None
        return float(q.min[0]), float(q.max[0])


def _list(seq: Any) -> list:
    """Flatbuffer vectors come back as numpy arrays or None."""
    return [] if seq is None else list(seq)


def _text(value: Any) -> str:
    """Flatbuffer strings come back as bytes."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def _load_enum_names() -> None:
    """Fill the builtin-op and tensor-type name tables once."""
    if _BUILTIN_NAMES:
        return
    from tensorflow.lite.python import schema_py_generated as schema

    _BUILTIN_NAMES.update({v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")})
    _TYPE_NAMES.update({v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")})
