"""Where QAT meets the pipeline: calibrate as the target does, train, export as annotations.

A target's pipeline is split at ``plan-precision``. The head (clean-up, BN folding, analysis,
calibration) runs once and gives the float graph and irq's own ranges; the tail
(plan-precision, insert-qdq) is what the fine-tuned model goes through again at export, with
the learned ranges in ``qmodel.ranges`` and no calibration, so every backend lowers the QAT
result exactly as it would lower a post-training-quantized one.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from irq.data import DataSet
from irq.errors import InputError
from irq.ir.model import QModel
from irq.pipeline.infra import PassManager
from irq.pipeline.prepare import quantize
from irq.pipeline.presets import with_weights
from irq.pipeline.recipe import Recipe
from irq.pipeline.registry import format_pipeline, parse_pipeline
from irq.pipeline.targets import Target, get_target
from irq.qat.translate import QDQModule
from irq.quant.spec import TensorRange

#: The passes a target may run after calibration for QAT to reproduce them at export.
TAIL_PASSES = frozenset({"plan-precision", "insert-qdq"})


@dataclass
class Prepared:
    """The model at each stage QAT needs.

    ``calibrated``: after the target's passes before plan-precision (float graph, ranges).
    ``structure``: ``calibrated`` through plan-precision and insert-qdq (the QDQ graph the
    fake quantizers mirror; for ONNX targets also the post-training-quantized result).
    ``tail``: the target's pipeline from plan-precision on, run again at export.
    """

    target: Target
    calibrated: QModel
    structure: QModel
    tail: str

    def ptq(self) -> QModel:
        """The post-training-quantized model, exactly as ``irq compile`` would produce it."""
        return PassManager(parse_pipeline(self.tail))(self.calibrated.clone()).model


def resolve_target(target: str | Target, weights: str | None = None) -> Target:
    """The target, with its weight type overridden (``int4``: int4 values, per the scheme)."""
    return with_weights(get_target(target) if isinstance(target, str) else target, weights)


def split_pipeline(target: Target) -> tuple[str, str, str]:
    """(head, tail, structure) pipeline strings of ``target`` for QAT; InputError if unsupported."""
    from irq.pipeline.prepare import plan_index

    passes = parse_pipeline(target.pipeline)
    cut = plan_index(passes)
    if cut is None:
        raise InputError(f"target {target.name} does not quantize (no plan-precision pass); nothing to train")
    from irq.passes.bias_correct import BiasCorrect

    # training sees the rounded weights and absorbs their shift: a measured correction would count it twice
    head, tail = passes[:cut], [p for p in passes[cut:] if not isinstance(p, BiasCorrect)]
    extra = [p.name for p in tail if p.name not in TAIL_PASSES]
    if extra:
        raise InputError(f"target {target.name}: QAT simulates static Q/DQ quantization; its pipeline ends "
                         f"with {', '.join(extra)}, which QAT cannot reproduce at export")
    structure = tail if "insert-qdq" in [p.name for p in tail] else [*tail, *parse_pipeline("insert-qdq")]
    return format_pipeline(head), format_pipeline(tail), format_pipeline(structure)


def prepare(qmodel: QModel, target: Target, calib: DataSet | None, recipe: Recipe | None = None) -> Prepared:
    """Run the target's head (with calibration) and build the QDQ structure QAT mirrors."""
    head, tail, structure_pipeline = split_pipeline(target)
    calibrated = quantize(qmodel, target, calib, recipe, head)
    structure = PassManager(parse_pipeline(structure_pipeline))(calibrated.clone()).model
    return Prepared(target, calibrated, structure, tail)


def learned_ranges(module: QDQModule) -> dict[str, TensorRange]:
    """Every activation's trained range, under each name insert-qdq may read it from."""
    out: dict[str, TensorRange] = {}
    for name, key in module.range_keys.items():
        out[name] = module.act_range(key).to_range()
    for key, name in module.folded_outputs.items():
        # insert-qdq rebuilds a folded quantizer's range from the activation's output range
        out[name] = module.act_range(key).to_range()
    return out


def export(prepared: Prepared, module: QDQModule) -> QModel:
    """The fine-tuned model as IR annotations, lowered through the target's tail (no calibrate).

    The graph is the calibrated float graph with the trained float weights as initializers,
    ``ranges`` holds the learned ranges, ``plan`` the plan the fake quantizers followed.
    """
    out = prepared.calibrated.clone()
    for name, index in module.weight_index.items():
        array = module.weights[index].detach().cpu().numpy()
        out.graph.initializers[name].const_value = ir.tensor(array, name=name)
    out.ranges.update(learned_ranges(module))
    out.plan = dict(prepared.structure.plan)
    out.analysis.record("qat", ranges_learned=any(p.requires_grad for p in module.ranges.parameters()))
    return PassManager(parse_pipeline(prepared.tail))(out).model
