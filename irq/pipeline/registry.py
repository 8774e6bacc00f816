"""The pass registry and the pipeline-string parser.

Built-in passes are listed here; third-party passes are found through the ``irq.passes``
entry-point group. A name registered twice is an error, never a silent override. A pipeline
is one string: ``"fold-bn,calibrate{method=percentile,percentile=99.99},insert-qdq"``; its
grammar (quoted strings, ``[a,b]`` tuples, ``fixpoint(...)`` groups) is in ``irq.pipeline.grammar``.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from functools import cache
from importlib.metadata import entry_points

from irq.errors import PipelineError
from irq.pipeline.grammar import Element, Quoted, parse
from irq.pipeline.infra import Pass, PassManager

ENTRY_POINT_GROUP = "irq.passes"

BUILTIN_PASSES: dict[str, str] = {
    "freeze-inputs": "irq.passes.freeze_inputs:FreezeInputs",
    "fix-input-shapes": "irq.passes.fix_input_shapes:FixInputShapes",
    "shape-inference": "irq.passes.shape_inference:ShapeInference",
    "decompose-rnn": "irq.passes.decompose_rnn:DecomposeRNN",
    "decompose-depth-to-space": "irq.passes.decompose_depth_to_space:DecomposeDepthToSpace",
    "decompose-layer-norm": "irq.passes.decompose_layer_norm:DecomposeLayerNorm",
    "widen-bool-expand": "irq.passes.widen_bool_expand:WidenBoolExpand",
    "approximate-erf": "irq.passes.approximate_erf:ApproximateErf",
    "dequantize": "irq.passes.dequantize:Dequantize",
    "fold-constants": "irq.passes.fold_constants:FoldConstants",
    "cleanup": "irq.passes.cleanup:Cleanup",
    "fold-bn": "irq.passes.fold_bn:FoldBatchNorm",
    "fold-pad": "irq.passes.fold_pad:FoldPad",
    "equalize": "irq.passes.equalize:Equalize",
    "smooth-quant": "irq.passes.smooth_quant:SmoothQuant",
    "analyze": "irq.passes.analyze:Analyze",
    "calibrate": "irq.passes.calibrate:Calibrate",
    "plan-precision": "irq.passes.plan_precision:PlanPrecision",
    "bias-correct": "irq.passes.bias_correct:BiasCorrect",
    "adaround": "irq.passes.adaround:AdaRound",
    "insert-qdq": "irq.passes.insert_qdq:InsertQDQ",
    "quantize-dynamic": "irq.passes.quantize_dynamic:QuantizeDynamic",
    "to-fp16": "irq.passes.to_fp16:ToFP16",
    "int4-weights": "irq.passes.int4_weights:Int4Weights",
    "weight-scales": "irq.passes.weight_scales:WeightScales",
}


def _load(target: str, origin: str) -> type[Pass]:
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise PipelineError(f"pass {origin} ({target}) cannot be loaded: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise PipelineError(f"pass {origin} ({target}) is not an irq Pass subclass")
    if not callable(cls.requires):
        raise PipelineError(f"pass {origin} ({target}) declares requires as {cls.requires!r}: a pass states what "
                            "it needs of the IR in a method, requires(self, qmodel) -> list of missing things")
    return cls


@cache
def _plugin_targets() -> dict[str, str]:
    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN_PASSES:
            raise PipelineError(f"plugin pass {ep.name!r} ({ep.value}) clashes with the built-in pass")
        if ep.name in found and found[ep.name] != ep.value:
            raise PipelineError(f"pass {ep.name!r} is registered twice: {found[ep.name]} and {ep.value}")
        found[ep.name] = ep.value
    return found


def available_passes() -> dict[str, str]:
    """All pass names, built-in and plugin, with their import targets."""
    return {**BUILTIN_PASSES, **_plugin_targets()}


def get_pass_class(name: str) -> type[Pass]:
    """The pass class registered as ``name``."""
    targets = available_passes()
    if name not in targets:
        raise PipelineError(f"unknown pass {name!r}; known passes: {', '.join(sorted(targets))}")
    cls = _load(targets[name], repr(name))
    if cls.name != name:
        raise PipelineError(f"pass registered as {name!r} calls itself {cls.name!r}")
    return cls


def _convert(raw: str | list[str], hint: object, where: str) -> object:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        if isinstance(raw, str) and not isinstance(raw, Quoted) and raw.lower() in ("none", ""):
            return None
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        # a bare a|b|c is the older spelling of [a,b,c]
        return tuple(raw) if isinstance(raw, list) else tuple(s for s in raw.split("|") if s)
    if isinstance(raw, list):
        raise PipelineError(f"{where}: takes one value, not a list")
    try:
        if hint is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"expected true/false, got {raw!r}")
            return raw.lower() in ("true", "1", "yes")
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        return str(raw)
    except ValueError as e:
        raise PipelineError(f"{where}: {e}") from e


def make_pass(name: str, options: dict[str, str | list[str]]) -> Pass:
    """Instantiate pass ``name`` with string options, converted to the fields' types."""
    cls = get_pass_class(name)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, object] = {}
    for key, raw in options.items():
        attr = key.replace("-", "_")
        if attr not in fields:
            known = ", ".join(f.replace("_", "-") for f in fields) or "none"
            raise PipelineError(f"pass {name!r} has no option {key!r} (options: {known})")
        kwargs[attr] = _convert(raw, hints[attr], f"pass {name!r} option {key!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise PipelineError(f"pass {name!r}: {e}") from e


def _build(element: Element) -> Pass:
    if element.children is not None:
        return PassManager([_build(e) for e in element.children], fixpoint=element.name == "fixpoint")
    return make_pass(element.name, element.options)


def parse_pipeline(text: str) -> list[Pass]:
    """Parse ``"a,b{opt=v,opt2=w},fixpoint(c,d)"`` into passes, with errors naming the bad part."""
    return [_build(e) for e in parse(text)]


def format_pipeline(passes: list[Pass]) -> str:
    """The pipeline string that parses back to ``passes``."""
    return ",".join(p.spec() for p in passes)
