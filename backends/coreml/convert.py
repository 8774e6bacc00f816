"""From a lowered MIL program to an in-memory ``MLModel``, with irq's metadata attached.

coremltools' default MIL pipeline runs (fusions such as conv+bias, linear+bias, gelu, silu,
layer_norm; and, for fp16, casts around every op), less one pass that rewrites activation
scales (see :func:`pass_pipeline`).

Weight scales under fp16 compute (``options["weight_scale_dtype"]``):

* ``auto`` (default): a constexpr weight's output, and so its stored scale, becomes float16
  like everything else: the integers stay exactly the IR's, the scale becomes
  ``float16(scale)``, which keeps all 11 bits of precision while the scale is a normal float16
  number. A weight with any scale below float16's smallest normal (6.1e-5; dead or near-dead
  channels) keeps float32 scales instead and its output is cast to fp16 at run time. Cost: that
  layer's weight is no longer a constant operand in the program (EfficientNet-Lite0 from the
  zoo: 27 of 50 weights).
* ``compute``: every scale in float16, every weight a constant operand. Subnormal scales lose
  precision and coremltools replaces scales that underflow to 0 by the smallest subnormal
  (EfficientNet-Lite0: 9 weights), which the read-back check reports as mismatches.
* ``fp32``: every scale float32, bit for bit, every weight cast at run time.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json

import coremltools as ct
import numpy as np

from irq.backends.coreml.deploy import Deployment
from irq.backends.coreml.lower import LoweredProgram
from irq.backends.coreml.readback import IO_KEY, WEIGHT_OPS, WEIGHTS_KEY
from irq.errors import InputError, LoweringError

_FP16_TINY = float(np.finfo(np.float16).tiny)
_FP16_MAX = float(np.finfo(np.float16).max)


def _normal_fp16_scales(op) -> bool:
    """Whether the fp16 pass may cast ``op`` (anything but a weight whose scales fp16 would blur)."""
    if op.op_type not in WEIGHT_OPS:
        return True
    scale = np.abs(np.asarray(op.scale.val, np.float64))
    return bool(np.all((scale >= _FP16_TINY) & (scale <= _FP16_MAX)))


def _not_weights(op) -> bool:
    return op.op_type not in WEIGHT_OPS


_SCALE_POLICIES = {"auto": _normal_fp16_scales, "compute": lambda op: True, "fp32": _not_weights}


def compute_precision(compute: str, weight_scale_dtype: str = "auto"):
    """The ``compute_precision`` argument of ``ct.convert`` (see the module docstring)."""
    if weight_scale_dtype not in _SCALE_POLICIES:
        raise InputError(f"weight_scale_dtype must be one of {', '.join(_SCALE_POLICIES)}, "
                         f"not {weight_scale_dtype!r}")
    if compute == "fp32":
        return ct.precision.FLOAT32
    if compute == "fp16":
        return ct.transform.FP16ComputePrecision(op_selector=_SCALE_POLICIES[weight_scale_dtype])
    raise InputError(f"Core ML compute precision must be fp16 or fp32, not {compute!r}")


def pass_pipeline() -> ct.PassPipeline:
    """Coremltools' default pipeline without the pass that rewrites activation scales.

    ``distributive_quantized_binary_op_scale_normalization`` turns ``dq(x, sx) + dq(y, sy) ->
    q(sz)`` into ``dq(x, sx/sy) + dq(y, 1) -> q(sz/sy)``: equal in exact arithmetic, a little
    faster on the Neural Engine, but the package would no longer hold the IR's scales (in fp16
    the quotients round differently) and the read-back check could not tell it from a mistake.
    """
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes({"common::distributive_quantized_binary_op_scale_normalization"})
    return pipeline


def to_mlmodel(lowered: LoweredProgram, deployment: Deployment, compute: str,
               weight_scale_dtype: str = "auto") -> ct.models.MLModel:
    """Run coremltools' pipeline on the program and record the I/O names and weight records."""
    precision = compute_precision(compute, weight_scale_dtype)
    # coremltools draws progress bars on stderr; a library stays quiet. ct.convert ends with a
    # full gc.collect(), 0.7 s with TensorFlow's heap loaded (coremltools imports it): freezing
    # the objects that existed before makes that collection scan only what convert created.
    gc.freeze()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            mlmodel = ct.convert(lowered.program, convert_to="mlprogram", compute_precision=precision,
                                 minimum_deployment_target=deployment.ct_target, skip_model_load=True,
                                 pass_pipeline=pass_pipeline())
    except Exception as e:  # coremltools raises ValueError/RuntimeError/AssertionError
        raise LoweringError(f"coremltools rejected the lowered program: {e}") from e
    finally:
        gc.unfreeze()
    desc = mlmodel.get_spec().description
    for entries, specs in ((lowered.inputs, desc.input), (lowered.outputs, desc.output)):
        names = [s.name for s in specs]
        for i, entry in enumerate(entries):
            entry["coreml"] = entry["coreml"] if entry.get("coreml") in names else names[i]
    mlmodel.user_defined_metadata[IO_KEY] = json.dumps({"inputs": lowered.inputs, "outputs": lowered.outputs})
    mlmodel.user_defined_metadata[WEIGHTS_KEY] = json.dumps(lowered.weights)
    mlmodel.user_defined_metadata["irq.deployment_target"] = deployment.name
    mlmodel.user_defined_metadata["irq.compute_precision"] = compute
    return mlmodel
