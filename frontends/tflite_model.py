"""TFLite frontend: a float (or fp16-weight, or sparse-weight) ``.tflite`` into the IR, through tf2onnx.

tf2onnx's TFLite path converts builtin ops and keeps the model's own I/O layout (NHWC images
stay NHWC). Three things it leaves undone are done here:

- sparse weights (MediaPipe's ``*_sparse`` models): tf2onnx reads the packed buffer as if it were
  dense; LiteRT densifies it, so the dense values are read from a LiteRT run and handed to
  tf2onnx in place of the packed ones, and ``DENSIFY`` becomes Identity;
- MediaPipe's custom ``Convolution2DTransposeBias`` (a transposed convolution with bias, its
  padding and strides in a 12-byte options struct) becomes ONNX ConvTranspose;
- any other custom op is an error naming it, before anything else runs.

The original file stays the float reference: :class:`TFLiteReference` runs it in LiteRT, so
verification compares an artifact with the model the user gave, not with its conversion.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from irq.errors import InputError, ModelImportError
from irq.ir.edit import UniqueNames, scope_safe_name
from irq.ir.findings import SourceFile
from irq.ir.model import QModel

from .onnx_file import from_proto

OPSET = 17
_MAGIC = b"TFL3"


def is_tflite(path: Path) -> bool:
    """True for a file with the TFLite flatbuffer identifier."""
    try:
        with path.open("rb") as f:
            return f.read(8)[4:8] == _MAGIC
    except OSError:
        return False


def load_tflite(path: str | Path) -> QModel:
    """Convert ``path`` to the IR; ModelImportError names what cannot be converted."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    if not is_tflite(path):
        raise ModelImportError(f"{path}: not a TFLite model (no TFL3 identifier)")
    from irq.captured import captured_output

    data = path.read_bytes()
    with captured_output() as printed:
        try:
            proto = _convert(path, data)
        except ModelImportError:
            raise
        except Exception as e:  # tf2onnx raises what its handlers raise
            raise ModelImportError(f"{path}: tf2onnx could not convert it: {type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}") from e
    del printed
    qmodel = from_proto(proto, path.stem)
    qmodel.analysis.source = SourceFile("tflite", str(path.resolve()))
    return qmodel


def _convert(path: Path, data: bytes) -> onnx.ModelProto:
    import tf2onnx

    customs = _custom_ops(data)
    unknown = sorted({c for c in customs.values() if c not in _CUSTOM_FIXES})
    if unknown:
        raise ModelImportError(f"{path}: custom TFLite op(s) {', '.join(unknown)} cannot be converted "
                               "(no ONNX equivalent known to irq)")
    with _dense_weights(path, data):
        proto, _ = tf2onnx.convert.from_tflite(str(path), opset=OPSET)
    _densify_to_identity(proto)
    for node in list(proto.graph.node):
        if node.op_type.startswith("TFL_"):
            name = node.op_type.removeprefix("TFL_")
            fix = _CUSTOM_FIXES.get(name)
            if fix is None:
                raise ModelImportError(f"{path}: TFLite op {name} (node {node.name!r}) has no ONNX conversion")
            fix(proto, node, _custom_options(data, node.output[0]))
    _stable_constants(proto)
    _safe_names(proto)
    onnx.checker.check_model(proto)
    return proto


_GENERATED = re.compile(r"^(.*)__\d+$")


def _stable_constants(proto: onnx.ModelProto) -> None:
    """Number tf2onnx's folded constants by first use and store initializers in that order.

    tf2onnx numbers the constants it creates (``const_fold_opt__487``) from a counter whose order
    follows set iteration, which changes with the interpreter's hash seed: the same .tflite gave a
    differently named and ordered ONNX model in every process. The node order does not change, so
    first use is a stable key.
    """
    g = proto.graph
    first_use: dict[str, tuple[int, int]] = {}
    for i, node in enumerate(g.node):
        for slot, name in enumerate(node.input):
            first_use.setdefault(name, (i, slot))
    unused = (len(g.node), 0)
    inits = sorted(g.initializer, key=lambda t: (first_use.get(t.name, unused), t.name))
    taken = {t.name for t in inits if not _GENERATED.match(t.name)} | {v.name for v in (*g.input, *g.output)}
    taken |= {o for node in g.node for o in node.output}
    renamed: dict[str, str] = {}
    counter = 0
    for t in inits:
        match = _GENERATED.match(t.name)
        if not match or t.name in taken:
            continue
        while f"{match.group(1)}__{counter}" in taken:
            counter += 1
        renamed[t.name] = f"{match.group(1)}__{counter}"
        taken.add(renamed[t.name])
        counter += 1
    copies = [onnx.TensorProto() for _ in inits]
    for copy, t in zip(copies, inits, strict=True):
        copy.CopyFrom(t)
        copy.name = renamed.get(t.name, t.name)
    del g.initializer[:]
    g.initializer.extend(copies)
    for node in _all_nodes(g):
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the subgraphs of its If/Loop nodes (they read outer values)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _all_nodes(sub)


def _safe_names(proto: onnx.ModelProto) -> None:
    """Rename internal values and nodes to names TensorFlow accepts as scopes (TFLite joins fused op names with ';').

    onnx2tf names its Keras layers after ONNX names, and TensorFlow rejects ``a/b;c/d``. Graph
    inputs and outputs keep their names: they are the model's interface.
    """
    g = proto.graph
    keep = {v.name for v in (*g.input, *g.output)}
    names = UniqueNames(keep)
    renamed: dict[str, str] = {}

    def fresh(name: str) -> str:
        return scope_safe_name(name.split(";")[0], names, "v")

    for t in g.initializer:
        if t.name not in keep:
            renamed[t.name] = t.name = fresh(t.name)
    for node in g.node:
        for i, out in enumerate(node.output):
            if out and out not in keep:
                renamed[out] = node.output[i] = fresh(out)
        node.name = fresh(node.name or node.op_type)
    for node in g.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    for v in g.value_info:
        v.name = renamed.get(v.name, v.name)


# -- reading the flatbuffer ----------------------------------------------------------------------
def _model(data: bytes) -> Any:
    from tf2onnx.tflite.Model import Model

    return Model.GetRootAsModel(data, 0)


def _custom_ops(data: bytes) -> dict[str, str]:
    """Output tensor name -> custom op code, for every custom op of the main subgraph."""
    m = _model(data)
    codes = [m.OperatorCodes(i).CustomCode() for i in range(m.OperatorCodesLength())]
    g = m.Subgraphs(0)
    found = {}
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = codes[op.OpcodeIndex()]
        if code:
            found[g.Tensors(op.Outputs(0)).Name().decode()] = code.decode()
    return found


def _custom_options(data: bytes, output: str) -> bytes:
    m = _model(data)
    g = m.Subgraphs(0)
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        if g.Tensors(op.Outputs(0)).Name().decode() == output:
            return b"" if op.CustomOptionsIsNone() else op.CustomOptionsAsNumpy().tobytes()
    return b""


# -- sparse weights --------------------------------------------------------------------------------
def _sparse_dense_values(path: Path, data: bytes) -> dict[bytes, np.ndarray]:
    """Packed buffer bytes -> dense array, for every sparse constant (read off LiteRT's DENSIFY outputs)."""
    m = _model(data)
    g = m.Subgraphs(0)
    codes = [max(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(m.OperatorCodesLength())]
    densify = [g.Operators(i) for i in range(g.OperatorsLength()) if codes[g.Operators(i).OpcodeIndex()] == 124]
    if not densify:
        return {}
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Builtin kernels only: with XNNPACK the DENSIFY outputs are consumed inside the delegate
    # and read back as zeros.
    interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    found = {}
    for op in densify:
        packed = g.Tensors(op.Inputs(0))
        raw = m.Buffers(packed.Buffer()).DataAsNumpy().tobytes()
        found[raw] = np.array(interp.get_tensor(op.Outputs(0)))
        if not np.any(found[raw]):
            raise ModelImportError(f"{path}: LiteRT densified sparse tensor {packed.Name().decode()!r} to zeros")
    return found


@contextlib.contextmanager
def _dense_weights(path: Path, data: bytes) -> Iterator[None]:
    """Have tf2onnx read each sparse constant as LiteRT's dense values."""
    dense = _sparse_dense_values(path, data)
    if not dense:
        yield
        return
    import tf2onnx.tflite_utils as tu

    original = tu.tensor_util

    class _Dense:
        def __getattr__(self, name: str) -> Any:
            return getattr(original, name)

        @staticmethod
        def MakeNdarray(t: Any) -> np.ndarray:
            return dense[t.tensor_content] if t.tensor_content in dense else original.MakeNdarray(t)

    tu.tensor_util = _Dense()
    try:
        yield
    finally:
        tu.tensor_util = original


def _densify_to_identity(proto: onnx.ModelProto) -> None:
    for node in proto.graph.node:
        if node.op_type == "TFL_DENSIFY":
            node.op_type, node.domain = "Identity", ""
            del node.attribute[:]


# -- custom ops ----------------------------------------------------------------------------------
def _initializer(proto: onnx.ModelProto, name: str) -> np.ndarray:
    for t in proto.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    raise ModelImportError(f"input {name!r} of a transposed convolution is not a constant")


def _transpose_conv_bias(proto: onnx.ModelProto, node: onnx.NodeProto, options: bytes) -> None:
    """MediaPipe's Convolution2DTransposeBias (NHWC in, OHWI weights, bias) -> Transpose, ConvTranspose, Transpose."""
    if len(options) < 12:
        raise ModelImportError(f"Convolution2DTransposeBias {node.name!r}: options are {len(options)} bytes, "
                               "expected padding and two strides")
    padding, stride_w, stride_h = (int(v) for v in np.frombuffer(options[:12], np.int32))
    w = _initializer(proto, node.input[1])  # [Cout, kh, kw, Cin]
    bias = _initializer(proto, node.input[2])
    base = node.output[0]
    w_name, b_name = f"{base}__weight_iohw", f"{base}__bias"
    proto.graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(w.transpose(3, 0, 1, 2)), w_name),
                                    numpy_helper.from_array(bias.astype(np.float32), b_name)])
    kh, kw = int(w.shape[1]), int(w.shape[2])
    if padding == 1:  # SAME: output = input * stride, the extra padding at the end
        pads = [(kh - stride_h) // 2, (kw - stride_w) // 2, kh - stride_h - (kh - stride_h) // 2,
                kw - stride_w - (kw - stride_w) // 2]
    else:  # VALID
        pads = [0, 0, 0, 0]
    pads = [max(p, 0) for p in pads]
    new = [helper.make_node("Transpose", [node.input[0]], [f"{base}__nchw"], perm=[0, 3, 1, 2],
                            name=f"{base}__to_nchw"),
           helper.make_node("ConvTranspose", [f"{base}__nchw", w_name, b_name], [f"{base}__conv"],
                            strides=[stride_h, stride_w], pads=pads, kernel_shape=[kh, kw], name=f"{base}__deconv"),
           helper.make_node("Transpose", [f"{base}__conv"], [node.output[0]], perm=[0, 2, 3, 1],
                            name=f"{base}__to_nhwc")]
    nodes = list(proto.graph.node)
    at = nodes.index(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes[:at] + new + nodes[at + 1:])


_CUSTOM_FIXES = {"Convolution2DTransposeBias": _transpose_conv_bias}


# -- the original as the float reference ----------------------------------------------------------
def _in_order(details: list[dict], names: list[str]) -> list[dict]:
    """LiteRT's tensor details in the ONNX model's order (tf2onnx keeps the TFLite tensor names)."""
    by_name = {d["name"]: d for d in details}
    if all(n in by_name for n in names):
        return [by_name[n] for n in names]
    return details
class TFLiteReference:
    """Runs the user's original .tflite in LiteRT with ONNX-named inputs and outputs (same layout)."""

    runtime = "litert (the original .tflite)"

    def __init__(self, path: str | Path, input_names: list[str], output_names: list[str]) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from irq.captured import captured_output

        with captured_output():
            self._interp = Interpreter(model_path=str(path), num_threads=2)
            self._interp.allocate_tensors()
        self._inputs = _in_order(self._interp.get_input_details(), input_names)
        self._outputs = _in_order(self._interp.get_output_details(), output_names)
        if len(self._inputs) != len(input_names) or len(self._outputs) != len(output_names):
            raise ModelImportError(f"{path}: the converted model's I/O does not match the original's")
        self.input_names, self.output_names = input_names, output_names
        self._shapes: dict[int, tuple[int, ...]] = {}

    @property
    def max_batch(self) -> int | None:
        """The original's fixed batch."""
        return int(self._inputs[0]["shape"][0]) if len(self._inputs[0]["shape"]) else None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One invocation per batch."""
        changed = False
        for detail, name in zip(self._inputs, self.input_names, strict=True):
            x = np.asarray(feeds[name], detail["dtype"])
            if self._shapes.get(detail["index"]) != x.shape:
                self._interp.resize_tensor_input(detail["index"], list(x.shape))
                self._shapes[detail["index"]] = x.shape
                changed = True
        if changed:
            self._interp.allocate_tensors()
        for detail, name in zip(self._inputs, self.input_names, strict=True):
            self._interp.set_tensor(detail["index"], np.asarray(feeds[name], detail["dtype"]))
        self._interp.invoke()
        return [self._interp.get_tensor(d["index"]).copy() for d in self._outputs]
