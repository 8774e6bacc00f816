"""The Python API of quantization-aware training.

``qat(model, train_data, target=...)`` calibrates the model as the target does, builds the
fake-quantized torch module, fine-tunes it and returns the fine-tuned model as IR
annotations (float weights, learned ranges, plan) already through the target's tail passes,
ready for ``get_backend(target.backend).lower``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from irq.data import DataSet, load_data
from irq.data.conform import conform
from irq.errors import DataError
from irq.ir.model import QModel
from irq.pipeline.recipe import Recipe, load_recipe
from irq.pipeline.targets import Target
from irq.qat.prepare import Prepared, export, prepare, resolve_target
from irq.qat.train import Loss, QATOptions, TrainLog, accuracy, predict, to_device, train
from irq.qat.translate import QDQModule

#: Calibration samples taken from the training data when no calibration set is given.
DEFAULT_CALIB_SAMPLES = 500


@dataclass
class QATResult:
    """A finished QAT run.

    ``qmodel`` is the fine-tuned model through the target's tail passes (QDQ for ONNX and
    Core ML targets, float graph with ranges for TFLite); ``ptq`` the post-training-quantized
    model it started from; ``module`` the trained torch module; ``sim_accuracy`` the
    fake-quantized model's top-1 on ``eval_data`` before and after training (None without it).
    """

    qmodel: QModel
    ptq: QModel
    float_model: QModel
    module: QDQModule
    prepared: Prepared
    log: TrainLog
    target: Target
    sim_accuracy: dict[str, float | None]


def _is_torch_module(model: Any) -> bool:
    try:
        import torch
    except ImportError:  # torch is an optional dependency of irq, but QAT needs it anyway
        return False
    return isinstance(model, torch.nn.Module)


def _first_inputs(data: DataSet | Iterable) -> Any:
    """The inputs of the first training batch (example inputs for a torch export)."""
    if isinstance(data, DataSet):
        return tuple(to_device(np.asarray(v[:1]), _cpu()) for v in data.inputs.values())
    inputs, _ = next(iter(data))
    if isinstance(inputs, dict):
        return tuple(inputs.values())
    return inputs


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def import_for_qat(model: Any, train_data: DataSet | Iterable, example_inputs: Any = None) -> QModel:
    """The float QModel of ``model``: a torch module goes through irq's torch exporter first."""
    from irq.frontends import import_model

    if _is_torch_module(model):
        from irq.frontends.onnx_file import from_proto
        from irq.frontends.torch_module import export_torch

        example = example_inputs if example_inputs is not None else _first_inputs(train_data)
        return from_proto(export_torch(model, example), type(model).__name__)
    if isinstance(model, QModel | onnx.ModelProto | str | Path):
        return import_model(model)
    raise DataError(f"cannot train a {type(model).__name__}: give an ONNX path, zoo name, QModel or nn.Module")


def _calibration(train_data: DataSet | Iterable, qmodel: QModel, calib: Any) -> DataSet:
    if calib is not None:
        return conform(load_data(calib), qmodel.graph, "calibration")
    if isinstance(train_data, DataSet):
        return conform(train_data.head(DEFAULT_CALIB_SAMPLES), qmodel.graph, "calibration")
    arrays: dict[str, list[np.ndarray]] = {}
    count = 0
    names = [v.name or "" for v in qmodel.graph.inputs if v.const_value is None]
    for inputs, _ in train_data:
        values = inputs.values() if isinstance(inputs, dict) else inputs if isinstance(inputs, list | tuple) \
            else [inputs]
        for name, v in zip(names, values, strict=False):
            arrays.setdefault(name, []).append(np.asarray(v.cpu() if hasattr(v, "cpu") else v, np.float32))
        count += len(arrays[names[0]][-1])
        if count >= DEFAULT_CALIB_SAMPLES:
            break
    data = DataSet({k: np.concatenate(v)[:DEFAULT_CALIB_SAMPLES] for k, v in arrays.items()}, None,
                   "training batches")
    return conform(data, qmodel.graph, "calibration")


def qat(model: Any, train_data: DataSet | Iterable, *, target: str | Target = "onnx-int8",
        calib: Any = None, eval_data: DataSet | None = None, loss: Loss | None = None,
        recipe: str | Path | Recipe | None = None, weights: str | None = None,
        options: QATOptions | None = None, example_inputs: Any = None) -> QATResult:
    """Fine-tune ``model`` with the target's quantization simulated, and export the result.

    ``model``: ONNX path, zoo name, QModel (a pinned ``plan`` is honoured) or torch nn.Module.
    ``train_data``: DataSet with labels or DataLoader of (inputs, labels). ``calib``: the
    calibration data that initialises the ranges (default: the first 500 training samples).
    ``weights``: "int4" overrides the target scheme's weight type. Layers that the recipe or
    plan keeps in float train in float.
    """
    options = options or QATOptions()
    tgt = resolve_target(target, weights)
    float_model = import_for_qat(model, train_data, example_inputs)
    if isinstance(train_data, DataSet):
        train_data = conform(train_data, float_model.graph, "training")
    if eval_data is not None:
        eval_data = conform(eval_data, float_model.graph, "evaluation")
    rec = load_recipe(recipe) if isinstance(recipe, str | Path) else recipe
    prepared = prepare(float_model, tgt, _calibration(train_data, float_model, calib), rec)
    module = QDQModule(prepared.structure, prepared.calibrated, options.learn_ranges)
    module.to(options.torch_device())
    sim: dict[str, float | None] = {"before": None, "after": None}
    if eval_data is not None:
        sim["before"] = accuracy(predict(module, eval_data), eval_data.labels)
    log = train(module, train_data, options, loss)
    if eval_data is not None:
        sim["after"] = accuracy(predict(module, eval_data), eval_data.labels)
    module.cpu()
    return QATResult(export(prepared, module), prepared.ptq(), float_model, module, prepared, log, tgt, sim)
