"""Golden before/after graphs (ONNX text) for the rewriting passes.

Each case is a small graph written by hand in ONNX's text syntax, the pipeline run on it, and the
graph it must become, stored in ``tests/golden/<case>.txt`` (regenerate with
``IRQ_UPDATE_GOLDENS=1`` and read the diff). The rewritten graph must also compute what the
original did (onnxruntime, random inputs) unless the pass quantizes, and running the pass again
must change nothing (``modified=False``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnx.printer
import pytest

from irq.frontends.onnx_file import from_proto
from irq.ir.ort import make_session
from irq.pipeline.infra import PassManager
from irq.pipeline.registry import parse_pipeline

GOLDEN = Path(__file__).parent / "golden"
HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'

CASES: dict[str, tuple[str, str]] = {
    # Conv followed by BatchNormalization: the BN's scale and shift move into the Conv's weights and bias.
    "fold-bn": ("fold-bn", """
g (float[1,2,4,4] x) => (float[1,3,4,4] y)
<float[3,2,1,1] w = {1,2,3,4,5,6}, float[3] b = {0.1,0.2,0.3}, float[3] s = {1,2,0.5}, float[3] bb = {0,1,2},
 float[3] m = {0.5,0,1}, float[3] v = {1,4,0.25}>
{
  c = Conv (x, w, b)
  y = BatchNormalization <epsilon: float = 0.0> (c, s, bb, m, v)
}"""),
    # TF's SAME padding spelled as a Pad before a strided Conv (and one read by a Relu, left alone).
    "fold-pad": ("fold-pad", """
g (float[1,2,5,5] x) => (float[1,3,3,3] y, float[1,2,6,7] z)
<float[3,2,3,3] w = {1,2,3,4,5,6,7,8,9,1,2,3,4,5,6,7,8,9,1,2,3,4,5,6,7,8,9,1,2,3,4,5,6,7,8,9,1,2,3,4,5,6,7,8,9,
 1,2,3,4,5,6,7,8,9}, int64[8] p = {0,0,0,1,0,0,1,1}, int64[8] q = {0,0,1,1,0,0,0,1}>
{
  xp = Pad (x, p)
  y = Conv <strides = [2, 2], pads = [0, 0, 1, 0]> (xp, w)
  xq = Pad (x, q)
  z = Relu (xq)
}"""),
    # Conv -> Relu -> MaxPool -> Conv with uneven channel ranges: the first Conv's channels (and
    # bias) are divided by s, the second's input channels multiplied by s: every range ends at sqrt(r1 r2).
    "equalize": ("equalize", """
g (float[1,1,4,4] x) => (float[1,1,2,2] y)
<float[2,1,1,1] w1 = {8,0.5}, float[2] b1 = {1,2}, float[1,2,1,1] w2 = {0.25,4}>
{
  c1 = Conv (x, w1, b1)
  r = Relu (c1)
  p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r)
  y = Conv (p, w2)
}"""),
    # A dead branch and an Identity chain go; the live path stays.
    "cleanup": ("cleanup", """
g (float[1,4] x) => (float[1,4] y)
<float[1,4] k = {1,2,3,4}>
{
  a = Identity (x)
  dead = Mul (a, k)
  y = Add (a, k)
}"""),
    # Shape arithmetic on a static input folds to a constant; the Reshape then reads it.
    "fold-constants": ("shape-inference,fold-constants,cleanup", """
g (float[2,3,4] x) => (float[2,12] y)
{
  s = Shape (x)
  i0 = Constant <value = int64[1] {0}> ()
  d0 = Gather (s, i0)
  m1 = Constant <value = int64[1] {-1}> ()
  shape = Concat <axis = 0> (d0, m1)
  y = Reshape (x, shape)
}"""),
    # DepthToSpace spelled out as Reshape/Transpose/Reshape (onnx2tf mislays it between NHWC Transposes).
    "decompose-depth-to-space": ("shape-inference,decompose-depth-to-space,shape-inference", """
g (float[1,8,2,3] x) => (float[1,2,4,6] y)
{
  y = DepthToSpace <blocksize = 2, mode = "DCR"> (x)
}"""),
    # LayerNormalization as its arithmetic (onnx2tf misplaces its scale on a transformer's activations).
    "decompose-layer-norm": ("decompose-layer-norm", """
g (float[1,3,4] x) => (float[1,3,4] y)
<float[4] s = {1,2,3,4}, float[4] b = {0,1,0,1}>
{
  y = LayerNormalization <axis = -1, epsilon = 0.001> (x, s, b)
}"""),
    # A boolean Expand (an attention mask) runs on int32 between casts (onnx2tf has no bool Expand).
    "widen-bool-expand": ("shape-inference,widen-bool-expand", """
g (float[1,1,4] x) => (float[2,3,4] y)
<int64[3] shape = {2,3,4}, float zero = {0}>
{
  mask = Greater (x, zero)
  wide = Expand (mask, shape)
  y = Cast <to = 1> (wide)
}"""),
    # Erf (exact GELU) as tanh(a*u + b*u^3): TFLite has no Erf kernel.
    "approximate-erf": ("approximate-erf", """
g (float[2,8] x) => (float[2,8] y)
{
  y = Erf (x)
}"""),
    # A scalar input frozen to a constant: the If on it is inlined, the input is gone.
    "freeze-inputs": ('freeze-inputs{values=[flag:1]}', """
g (float[1,4] x, int64 flag) => (float[1,4] y)
<float[1,4] k = {1,2,3,4}, int64 one = {1}>
{
  c = Equal (flag, one)
  y = If (c) <
    then_branch = t () => (float[1,4] yt) { yt = Add (x, k) },
    else_branch = e () => (float[1,4] ye) { ye = Mul (x, k) }>
}"""),
    # Dynamic dims fixed; the shapes downstream are re-inferred.
    "fix-input-shapes": ("fix-input-shapes{shapes=[x:1x3x5]},shape-inference", """
g (float[N,3,W] x) => (float[N,3,W] y)
{
  y = Relu (x)
}"""),
    # A QDQ export's weight: its DequantizeLinear (per output column) folds into a float initializer.
    "dequantize": ("dequantize", """
g (float[1,2] x) => (float[1,3] y)
<int8[2,3] wq = {1,-2,3,4,5,-6}, float[3] ws = {0.5,0.25,2}, int8[3] wz = {0,1,0}>
{
  w = DequantizeLinear <axis = 1> (wq, ws, wz)
  y = MatMul (x, w)
}"""),
    # Float weights and activations to fp16 inside, float32 at the model's edges.
    "to-fp16": ("to-fp16", """
g (float[1,4] x) => (float[1,2] y)
<float[4,2] w = {1,2,3,4,5,6,7,8}>
{
  y = MatMul (x, w)
}"""),
}

#: Cases whose pass changes arithmetic (rounding) and so are compared with a tolerance.
TOLERANCE = {"to-fp16": 1e-2, "approximate-erf": 4e-4}
#: Cases whose pass cannot meaningfully run twice (the frozen input is gone: asking again is an error).
ONCE = {"freeze-inputs"}


def _after_text(case: str) -> tuple[str, onnx.ModelProto, onnx.ModelProto, bool]:
    pipeline, body = CASES[case]
    before = onnx.parser.parse_model(HEADER + body)
    onnx.checker.check_model(before, full_check=True)
    result = PassManager(parse_pipeline(pipeline))(from_proto(before, "g"))
    again = False if case in ONCE else PassManager(parse_pipeline(pipeline))(result.model.clone()).modified
    after = result.model.to_proto()
    return onnx.printer.to_text(after.graph) + "\n", before, after, again


def _feeds(model: onnx.ModelProto, fixed: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random feeds, of the fixed shapes where the rewritten model fixed them."""
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in fixed.graph.input}
    feeds = {}
    for value in model.graph.input:
        t = value.type.tensor_type
        dims = [d.dim_value or 1 for d in t.shape.dim]
        dims = shapes.get(value.name, dims) if all(shapes.get(value.name, [0])) else dims
        if t.elem_type == onnx.TensorProto.INT64:
            feeds[value.name] = np.ones(dims, np.int64)
        else:
            feeds[value.name] = rng.normal(size=dims).astype(np.float32)
    return feeds


@pytest.mark.parametrize("case", sorted(CASES))
def test_pass_rewrites_to_its_golden_graph(case):
    text, before, after, modified_again = _after_text(case)
    path = GOLDEN / f"{case}.txt"
    if os.environ.get("IRQ_UPDATE_GOLDENS") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{case}: the rewritten graph differs from {path}"
    onnx.checker.check_model(after)
    assert not modified_again, f"{case}: running the pipeline again changed the model"
    rng = np.random.default_rng(0)
    feeds = _feeds(before, after, rng)
    want = make_session(before.SerializeToString()).run(None, feeds)
    kept = {i.name for i in after.graph.input}
    got = make_session(after.SerializeToString()).run(None, {k: v for k, v in feeds.items() if k in kept})
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g, w, rtol=TOLERANCE.get(case, 1e-5), atol=TOLERANCE.get(case, 1e-5))
