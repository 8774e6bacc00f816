"""Run a .tflite artifact with LiteRT in the ONNX model's layout, names and order.

Lowering writes ``model.tflite.json`` beside the model: the ONNX input and output names, the
signature names irq gave them and the layout permutations, so ``irq verify`` can run an
artifact without the IR. Without the sidecar, a reference QModel supplies the ONNX names and
onnx2tf's default layout rule (3- to 5-D inputs become channels-last) is assumed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irq.backends.base import Runner
from irq.backends.tflite.keras_build import IOSpec
from irq.backends.tflite.offline import THREADS, captured_output
from irq.errors import VerificationError

if TYPE_CHECKING:
    from irq.ir.model import QModel

SIDECAR_FORMAT = 1


def sidecar_path(model_path: Path) -> Path:
    """Where the I/O description of a .tflite lives."""
    return model_path.with_name(model_path.name + ".json")


def sidecar_text(inputs: list[IOSpec], outputs: list[IOSpec], info: dict[str, Any]) -> str:
    """The sidecar's JSON text."""
    return json.dumps({"format": SIDECAR_FORMAT, "signature": "serving_default",
                       "inputs": [asdict(s) for s in inputs], "outputs": [asdict(s) for s in outputs],
                       "mode": info.get("mode"), "io": info.get("io")}, indent=1)


def read_sidecar(model_path: Path) -> tuple[list[IOSpec], list[IOSpec]] | None:
    """The I/O specs stored beside a .tflite, or None when there is no sidecar."""
    path = sidecar_path(model_path)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != SIDECAR_FORMAT:
            raise VerificationError(f"{path}: unknown sidecar format {meta.get('format')!r}")
        load = lambda items: [IOSpec(d["onnx_name"], d["tflite_name"], tuple(d["perm"]), d["dtype"])  # noqa: E731
                              for d in items]
        return load(meta["inputs"]), load(meta["outputs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VerificationError(f"{path}: unreadable sidecar ({e})") from e


def specs_from_reference(reference: QModel, output_shapes: dict[str, list[int]],
                         input_shapes: dict[str, list[int]] | None = None) -> tuple[list[IOSpec], list[IOSpec]]:
    """I/O specs rebuilt from the ONNX graph and the .tflite's shapes (no sidecar).

    Inputs of rank 3 to 5 are taken as channels-last (onnx2tf's default) unless the .tflite's
    input has the ONNX shape as it is (a model imported from TFLite is NHWC already); an output
    is transposed back when its TFLite shape is the channels-last form of the ONNX shape.
    """
    graph = reference.graph
    inputs = []
    for i, v in enumerate(graph.inputs):
        rank = len(v.shape) if v.shape is not None else 0
        in_perm = (0, *range(2, rank), 1) if 3 <= rank <= 5 else tuple(range(rank))
        onnx_shape = [d if isinstance(d, int) else None for d in (v.shape or [])]
        got = list((input_shapes or {}).get(f"input_{i}", []))
        if (len(got) == rank and all(a is None or a == b for a, b in zip(onnx_shape, got, strict=True))
                and any(onnx_shape[p] is not None and onnx_shape[p] != got[k] for k, p in enumerate(in_perm))):
            in_perm = tuple(range(rank))
        inputs.append(IOSpec(v.name or "", f"input_{i}", in_perm, "float32"))
    outputs = []
    for i, v in enumerate(graph.outputs):
        name = f"output_{i}"
        shape = [d if isinstance(d, int) else -1 for d in (v.shape or [])]
        got = list(output_shapes.get(name, []))
        rank = len(got)
        perm: tuple[int, ...] = tuple(range(rank))
        if 3 <= rank <= 5 and len(shape) == rank and got[1:] != shape[1:]:
            back = tuple(int(p) for p in np.argsort((0, *range(2, rank), 1)))
            if [got[p] for p in back][1:] == shape[1:]:
                perm = back
        outputs.append(IOSpec(v.name or "", name, perm, "float32"))
    return inputs, outputs


class TFLiteRunner(Runner):
    """Runs a .tflite through its serving signature with XNNPACK and two threads."""

    runtime = "litert"

    def __init__(self, path: Path, reference: QModel | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        if not path.exists():
            raise VerificationError(f"{path}: no such .tflite file")

        try:
            # The default op resolver applies the XNNPACK delegate (which announces itself on
            # stderr; the library stays quiet).
            with captured_output():
                self._interpreter = Interpreter(model_path=str(path), num_threads=THREADS)
                self._interpreter.allocate_tensors()  # applies XNNPACK now: a refusal fails here
                signature = self._interpreter._get_full_signature_list()["serving_default"]
        except (ValueError, RuntimeError, KeyError) as e:
            raise VerificationError(f"{path}: LiteRT cannot load the model ({e})") from e
        self.path = path
        # Tensor indices straight from the signature: a SignatureRunner would re-allocate the
        # interpreter on every call (see _invoke).
        details = {d["index"]: d for d in (*self._interpreter.get_input_details(),
                                           *self._interpreter.get_output_details())}
        self._in_details = {name: details[i] for name, i in signature["inputs"].items()}
        self._out_details = {name: details[i] for name, i in signature["outputs"].items()}
        self._shapes: dict[str, tuple[int, ...]] = {
            k: tuple(int(s) for s in d["shape"]) for k, d in self._in_details.items()}
        specs = read_sidecar(path)
        if specs is None:
            if reference is None:
                raise VerificationError(f"{path}: no {sidecar_path(path).name} sidecar and no reference "
                                        "model to name the inputs and outputs")
            shapes = {k: list(d["shape"]) for k, d in self._out_details.items()}
            specs = specs_from_reference(reference, shapes, {k: list(d["shape"]) for k, d in self._in_details.items()})
        self.inputs, self.outputs = specs
        unknown = [s.tflite_name for s in (*self.inputs, *self.outputs)
                   if s.tflite_name not in self._in_details and s.tflite_name not in self._out_details]
        if unknown:
            raise VerificationError(f"{path}: the serving signature has no tensor(s) {', '.join(unknown)}")
        batches = {int(d["shape_signature"][0]) for d in self._in_details.values()
                   if len(d["shape_signature"])}
        # The smallest leading size: a recurrent state's leading axis is its layer count, not the batch.
        self._fixed_batch = min(batches) if batches and min(batches) > 0 else None

    def _invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Write inputs straight into the interpreter's buffers, invoke, read outputs.

        ``feeds`` are in the TFLite layout (a transposed view is fine: the copy into the
        buffer is the only one). The signature runner resizes inputs and re-allocates
        (re-planning XNNPACK) on every call, which cost more than the int8 inference itself;
        here that happens only when an input shape changes.
        """
        interp = self._interpreter
        changed = False
        for name, x in feeds.items():
            if self._shapes.get(name) != x.shape:
                interp.resize_tensor_input(self._in_details[name]["index"], list(x.shape))
                self._shapes[name] = x.shape
                changed = True
        if changed:
            try:
                interp.allocate_tensors()
            except RuntimeError as e:
                # XNNPACK cannot re-plan some graphs for another batch (a float island's Reshape
                # with a fixed shape) and leaves the interpreter unusable: load it again, at the
                # shapes the model was built with.
                from ai_edge_litert.interpreter import Interpreter

                with captured_output():
                    self._interpreter = Interpreter(model_path=str(self.path), num_threads=THREADS)
                    self._interpreter.allocate_tensors()
                self._shapes = {k: tuple(int(v) for v in d["shape"]) for k, d in self._in_details.items()}
                raise _CannotResize(str(e)) from e
        for name, x in feeds.items():
            # A view of the input tensor's own memory, dropped before invoke (LiteRT refuses to run
            # while Python holds one); assigning into it casts and lays out in one pass.
            interp.tensor(self._in_details[name]["index"])()[...] = x
        interp.invoke()
        return {name: interp.get_tensor(d["index"]) for name, d in self._out_details.items()}

    @property
    def delegated_partitions(self) -> int:
        """How many parts of the graph XNNPACK took over (0: everything runs on builtin kernels)."""
        return sum(1 for op in self._interpreter._get_ops_details() if op["op_name"] == "DELEGATE")

    @property
    def max_batch(self) -> int | None:
        """The model's fixed batch size (None when the batch dimension is dynamic)."""
        return self._fixed_batch

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run ONNX-layout feeds (in chunks of ``max_batch``) and return ONNX-layout outputs."""
        missing = [s.onnx_name for s in self.inputs if s.onnx_name not in feeds]
        if missing:
            raise VerificationError(f"{self.path}: no feed for input(s) {', '.join(missing)}")
        own = {s.onnx_name: feeds[s.onnx_name] for s in self.inputs}  # a frozen input's feed is ignored
        first = np.asarray(own[self.inputs[0].onnx_name])
        n = len(first) if first.ndim else 1
        step = self._fixed_batch or max(n, 1)
        if n <= step:
            try:
                return self._run_chunk(own)
            except _CannotResize:
                built = {int(d["shape"][0]) for d in self._in_details.values() if len(d["shape"])}
                self._fixed_batch = step = min(built) if built and min(built) > 0 else 1
                if n <= step:
                    return self._run_chunk(own)
        if n % step:
            raise VerificationError(f"{self.path}: batch {n} is not a multiple of the fixed batch {step}")
        chunks = [self._run_chunk({k: v[i:i + step] for k, v in own.items()}) for i in range(0, n, step)]
        return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]

    def _run_chunk(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One invocation: quantization (in the ONNX layout, before the smaller int8 transpose), run, back."""
        kwargs = {}
        for spec in self.inputs:
            x = _to_tensor(np.asarray(feeds[spec.onnx_name]), self._in_details[spec.tflite_name])
            kwargs[spec.tflite_name] = np.transpose(x, spec.perm) if spec.perm else x
        try:
            result = self._invoke(kwargs)
        except _CannotResize:
            raise
        except (ValueError, RuntimeError) as e:
            raise VerificationError(f"{self.path}: LiteRT failed to run ({e})") from e
        outs = []
        for spec in self.outputs:
            y = _from_tensor(result[spec.tflite_name], self._out_details[spec.tflite_name])
            outs.append(np.ascontiguousarray(np.transpose(y, spec.perm)) if spec.perm and y.ndim == len(spec.perm)
                        else y)
        return outs


class _CannotResize(RuntimeError):
    """The interpreter refused a batch other than the one the model was built with."""


def _to_tensor(x: np.ndarray, detail: dict) -> np.ndarray:
    """Cast (and for int8/uint8 inputs, quantize) an array for a TFLite input tensor (layout unchanged)."""
    dtype = np.dtype(detail["dtype"])
    scales = detail["quantization_parameters"]["scales"]
    if dtype.kind in "iu" and len(scales) == 1 and np.issubdtype(x.dtype, np.floating):
        zp = int(detail["quantization_parameters"]["zero_points"][0])
        info = np.iinfo(dtype)
        q = np.divide(x, np.float32(scales[0]), dtype=np.float32)
        np.rint(q, out=q)
        q += zp
        return np.clip(q, info.min, info.max, out=q).astype(dtype)
    return x if x.dtype == dtype else x.astype(dtype)


def _from_tensor(y: np.ndarray, detail: dict) -> np.ndarray:
    """Dequantize an int8/uint8 output to float32 (float outputs pass through)."""
    scales = detail["quantization_parameters"]["scales"]
    if y.dtype.kind in "iu" and len(scales) == 1:
        zp = int(detail["quantization_parameters"]["zero_points"][0])
        return ((y.astype(np.float32) - zp) * np.float32(scales[0])).astype(np.float32)
    return y
