"""Target presets: for each deployable format, the quantization scheme, pass pipeline and backend.

A target is data. ``irq compile --target T`` runs ``T.pipeline`` over the IR, then hands the
result to ``T.backend`` with ``T.options``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from irq.errors import InputError
from irq.quant.spec import Precision, QType, Scheme

if TYPE_CHECKING:
    from irq.backends.base import Backend

CLEANUP = "dequantize,shape-inference,fold-constants,cleanup,fold-bn"
#: onnxruntime runs a Pad before a Conv as its own op (and, quantized, with its own Q/DQ pair).
ONNX_CLEANUP = f"{CLEANUP},fold-pad"
QUANTIZE = "analyze,calibrate{input-means=64},plan-precision,bias-correct,insert-qdq"
STATIC = f"{ONNX_CLEANUP},{QUANTIZE}"
#: Mobile converters lower recurrent layers badly (or not at all): unroll them into plain ops.
#: Shapes again after folding: the converters map outputs by shape, and an exporter's declared
#: output shape is only checked once the shape arithmetic before it is folded.
MOBILE = f"{CLEANUP},shape-inference,decompose-rnn"
#: ONNX ops (beyond what onnxruntime's QDQ quantizes) that the TFLite converter runs in int8.
TFLITE_INT8_OPS = "PRelu,Tanh,Softmax,ReduceMean,Sub,Max,Min,DepthToSpace,SpaceToDepth,Gather,Mean"
#: onnx2tf guesses layouts; DepthToSpace between NHWC-origin Transposes defeats the guess, and
#: its LayerNormalization places the scale on the guessed axis; its Expand has no bool kernel,
#: and TFLite no Erf kernel (a GELU).
TFLITE = f"{MOBILE},decompose-depth-to-space,decompose-layer-norm,widen-bool-expand,approximate-erf"


@dataclass(frozen=True)
class Target:
    """One deployable target: how to quantize and which backend writes the artifact."""

    name: str
    backend: str
    pipeline: str
    scheme: Scheme = field(default_factory=Scheme)
    default_precision: Precision = Precision.INT8
    needs_calibration: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: The accuracy preset the pipeline was built with (irq.pipeline.presets).
    preset: str = "fast"


_BACKENDS = {
    "onnx": "irq.backends.onnx_qdq:OnnxBackend",
    "tflite": "irq.backends.tflite:TFLiteBackend",
    "coreml": "irq.backends.coreml:CoreMLBackend",
}

_S8 = Scheme(activation=QType.INT8, symmetric_activations=False)

TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("onnx-fp32", "onnx", ONNX_CLEANUP, default_precision=Precision.FP32,
           description="plain ONNX, cleaned up, no quantization"),
    Target("onnx-int8", "onnx", STATIC, Scheme(activation=QType.UINT8, reduce_range="auto"), needs_calibration=True,
           description="static int8 QDQ for onnxruntime on x86 (uint8 activations, int8 weights)"),
    Target("onnx-int8-arm", "onnx", STATIC, _S8, needs_calibration=True, options={"kernels": "arm"},
           description="static int8 QDQ for onnxruntime on Arm (int8 activations and weights)"),
    Target("onnx-fp16", "onnx", f"{ONNX_CLEANUP},to-fp16", default_precision=Precision.FP16,
           description="float16 weights and compute, float32 I/O"),
    Target("onnx-dynamic", "onnx", f"{ONNX_CLEANUP},analyze,plan-precision,quantize-dynamic",
           Scheme(reduce_range="auto"), default_precision=Precision.DYNAMIC_INT8,
           description="dynamic int8: int8 MatMul/Gemm/Conv/RNN weights, float activations"),
    Target("onnx-int4", "onnx", f"{ONNX_CLEANUP},analyze,plan-precision,int4-weights",
           Scheme(weight=QType.INT4), default_precision=Precision.INT4_WEIGHT,
           description="block-wise int4 MatMul weights (MatMulNBits), float activations"),
    Target("tflite-int8", "tflite", f"{TFLITE},analyze,calibrate{{input-means=64}},"
           f"plan-precision{{also-int8=[{TFLITE_INT8_OPS}]}},bias-correct", _S8,
           needs_calibration=True, options={"mode": "int8"},
           description="TFLite full-integer int8 (int8 I/O unless --io float)"),
    Target("tflite-int16x8", "tflite", f"{TFLITE},analyze,calibrate{{input-means=64,method=minmax}},"
           f"plan-precision{{also-int8=[{TFLITE_INT8_OPS}]}},bias-correct", _S8,
           needs_calibration=True, options={"mode": "int8", "activations": "int16"},
           description="TFLite 16x8: int16 activations, int8 weights, the whole model (int16 I/O unless "
                       "--io float)"),
    Target("tflite-fp16", "tflite", TFLITE, default_precision=Precision.FP16,
           options={"mode": "fp16"}, description="TFLite with float16 weights"),
    Target("tflite-dynamic", "tflite", f"{TFLITE},analyze,plan-precision",
           default_precision=Precision.DYNAMIC_INT8, options={"mode": "dynamic"},
           description="TFLite dynamic-range: int8 weights, float activations"),
    Target("tflite-fp32", "tflite", TFLITE, default_precision=Precision.FP32,
           options={"mode": "fp32"}, description="TFLite float32, no quantization"),
    Target("coreml-int8", "coreml", f"{MOBILE},analyze,plan-precision,bias-correct,insert-qdq{{activations=false}}",
           default_precision=Precision.INT8_WEIGHT, options={"compute": "fp16"},
           description="Core ML: int8 per-channel weights, fp16 compute"),
    Target("coreml-w8a8", "coreml", f"{MOBILE},{QUANTIZE}", _S8, needs_calibration=True,
           options={"compute": "fp16"},
           description="Core ML: int8 weights and activations (iOS 17+)"),
    Target("coreml-fp16", "coreml", MOBILE, default_precision=Precision.FP16,
           options={"compute": "fp16"}, description="Core ML ML Program in float16"),
    Target("coreml-fp32", "coreml", MOBILE, default_precision=Precision.FP32,
           options={"compute": "fp32"}, description="Core ML ML Program in float32"),
]}


def get_target(name: str) -> Target:
    """The preset called ``name``; InputError listing the known ones otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise InputError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}") from None


def get_backend(name: str) -> Backend:
    """Instantiate the backend called ``name`` (imported lazily: TensorFlow is slow to load)."""
    module_name, _, cls_name = _BACKENDS[name].partition(":")
    from irq.captured import captured_output

    try:
        # coremltools and TensorFlow print at import (CUDA probes, "Failed to load _MLModelProxy");
        # a library does not print: the text is kept for the error message if the import fails.
        with captured_output() as printed:
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"backend {name!r} is not available: {e} {printed.tail(2)}".strip()) from e
    return getattr(module, cls_name)()
