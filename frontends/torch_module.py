"""PyTorch frontend: export an nn.Module to ONNX with the TorchScript exporter (opset 17).

The TorchScript exporter (``dynamo=False``) folds BatchNorm in eval mode and keeps weights
inside the model; it is fast (1.5 s for ResNet-50 here).
"""

from __future__ import annotations

import importlib
import io
import warnings
from collections.abc import Sequence
from typing import Any

import onnx

from irq.errors import InputError, ModelImportError
from irq.ir.model import QModel

from .onnx_file import from_proto


def export_torch(module: Any, example_inputs: Any, input_names: Sequence[str] | None = None,
                 output_names: Sequence[str] | None = None, dynamic_batch: bool = True,
                 opset: int = 17) -> onnx.ModelProto:
    """Export ``module`` (in eval mode) to an ONNX ModelProto."""
    import torch

    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    names = list(input_names or (["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]))
    outs = list(output_names or ["output"])
    axes = {n: {0: "batch"} for n in names + outs} if dynamic_batch else None
    buf = io.BytesIO()
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter warns about its own deprecation
            torch.onnx.export(module, args, buf,  # type: ignore[arg-type]  # it takes file objects too
                              dynamo=False, opset_version=opset, input_names=names,
                              output_names=outs, dynamic_axes=axes, do_constant_folding=True)
    except Exception as e:  # torch raises many unrelated types from tracing
        raise ModelImportError(f"torch.onnx.export failed for {type(module).__name__}: "
                               f"{str(e).splitlines()[0]}") from e
    return onnx.load_from_string(buf.getvalue())


def from_torch(module: Any, example_inputs: Any, name: str | None = None, **kwargs: Any) -> QModel:
    """Export a torch module and wrap it as a QModel."""
    return from_proto(export_torch(module, example_inputs, **kwargs), name or type(module).__name__)


def load_callable(spec: str) -> QModel:
    """``package.module:function`` returning ``(nn.Module, example_input)``."""
    module_name, _, func_name = spec.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as e:
        raise InputError(f"{spec}: cannot import model function ({e})") from e
    result = func()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise InputError(f"{spec}: must return (torch.nn.Module, example_input)")
    return from_torch(result[0], result[1], name=func_name)
