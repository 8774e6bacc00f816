"""ONNX frontend: load a model file safely into the IR.

External data must live inside the model's folder; a path that escapes it is refused before
anything is read. Old opsets are upgraded to 13 (per-channel Q/DQ needs it).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError
from onnx.external_data_helper import uses_external_data

from irq.errors import InputError, ModelImportError
from irq.ir.model import QModel

MIN_OPSET = 13


def _check_external_data(model: onnx.ModelProto, path: Path) -> None:
    base = path.parent.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(base):
            raise ModelImportError(f"{path}: tensor {tensor.name!r} points to external data "
                                   f"{location!r} outside the model's folder; refusing to read it")
        if not target.is_file():
            raise ModelImportError(f"{path}: external data {location!r} of tensor {tensor.name!r} is missing")


def _upgrade_opset(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    newest = onnx.defs.onnx_opset_version()
    if version is None:
        raise ModelImportError(f"{path}: the model imports no default ONNX opset")
    if version > newest:
        raise ModelImportError(f"{path}: opset {version} is newer than this onnx supports ({newest})")
    if version >= MIN_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:  # the converter raises RuntimeError and untyped C++ errors
        raise ModelImportError(f"{path}: unsupported opset {version}: upgrading to {MIN_OPSET} "
                               f"failed ({str(e).splitlines()[0]})") from e


def load_onnx_proto(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file; the file itself is never modified."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an ONNX model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise ModelImportError(f"{path}: not a valid ONNX model ({type(e).__name__})") from e
    if not model.graph.node and not model.graph.output:
        raise ModelImportError(f"{path}: not a valid ONNX model (empty or truncated graph)")
    _check_external_data(model, path)
    onnx.load_external_data_for_model(model, str(path.parent))
    model = _upgrade_opset(model, path)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelImportError(f"{path}: invalid ONNX model: {str(e).splitlines()[0]}") from e
    return model


#: The newest IR version whose features opset <= 21 models can use; onnx's helpers stamp newer
#: versions than onnxruntime reads, so such models are relabelled (nothing else changes).
_IR_VERSION_FOR_OPSET_21 = 10


def _negative_dims_symbolic(model: onnx.ModelProto) -> None:
    """Paddle's exporter writes dynamic dimensions as -1; make them symbolic like every other exporter's."""
    g = model.graph
    for value in (*g.input, *g.output, *g.value_info):
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.ClearField("dim_value")
                dim.dim_param = f"{value.name}_dim{i}"


def from_proto(model: onnx.ModelProto, name: str) -> QModel:
    """Wrap a checked ModelProto as a QModel (negative dimensions become symbolic)."""
    if any(d.dim_value < 0 for v in (*model.graph.input, *model.graph.output)
           for d in v.type.tensor_type.shape.dim):
        model = onnx.ModelProto.FromString(model.SerializeToString())
        _negative_dims_symbolic(model)
    qmodel = QModel(model=ir.serde.deserialize_model(model), name=name)
    opset = qmodel.model.opset_imports.get("", 0)
    if opset <= 21 and (qmodel.model.ir_version or 0) > _IR_VERSION_FOR_OPSET_21:
        qmodel.model.ir_version = _IR_VERSION_FOR_OPSET_21
    return qmodel


def load_onnx(path: str | Path) -> QModel:
    """Load an ONNX file into a QModel named after the file."""
    return from_proto(load_onnx_proto(path), Path(path).stem)
