"""ONNX -> Keras with onnx2tf, remembering which Keras layer came from which ONNX node.

onnx2tf names its Keras layers after TensorFlow ops (``tf.nn.convolution_3``), not after ONNX
nodes, and keeps its ONNX-value -> Keras-tensor table (``tf_layers_dict``) private. The table is
captured by wrapping the helper that reads the model outputs from it; every Keras layer between
one ONNX value's tensor and the tensors of that node's inputs is then attributed to the node,
and layers are renamed ``n<k>__<node>`` so TFLite tensor names (``n7__conv1/Conv2D;...``) point
back to ONNX nodes through :attr:`KerasBuild.layer_nodes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from irq.errors import LoweringError
from irq.ir.model import node_label


@dataclass(frozen=True)
class IOSpec:
    """One model input or output: ONNX name, TFLite signature name and the layout change.

    ``perm`` turns an array in the source layout into the destination layout: ONNX -> TFLite
    for inputs, TFLite -> ONNX for outputs.
    """

    onnx_name: str
    tflite_name: str
    perm: tuple[int, ...]
    dtype: str


@dataclass
class KerasBuild:
    """The Keras model onnx2tf built and how its layers relate to the ONNX graph."""

    model: Any  # tf_keras.Model; TensorFlow is imported lazily
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    layer_nodes: dict[str, str] = field(default_factory=dict)  # Keras layer -> ONNX node label
    value_layers: dict[str, str] = field(default_factory=dict)  # ONNX value -> final Keras layer


def build_keras(proto: onnx.ModelProto, graph: ir.Graph) -> KerasBuild:
    """Run onnx2tf (Keras model only) on ``proto``; ``graph`` is the same graph as onnx-ir.

    Must run inside :func:`offline.offline_onnx2tf` and :func:`offline.captured_output`.
    """
    import onnx2tf
    import onnx2tf.onnx2tf as o2t

    captured: dict[str, dict] = {}
    original = o2t.get_tf_model_outputs

    def capture_outputs(**kwargs: Any) -> list:
        captured["layers"] = kwargs["tf_layers_dict"]
        return original(**kwargs)

    o2t.get_tf_model_outputs = capture_outputs
    try:
        model = onnx2tf.convert(onnx_graph=proto, disable_model_save=True, non_verbose=True,
                                verbosity="error", not_use_onnxsim=True,
                                keep_nwc_or_nhwc_or_ndhwc_input_names=_o2t_names(channels_last_inputs(graph)))
    except SystemExit as e:  # onnx2tf calls sys.exit on some unsupported inputs
        raise LoweringError(f"onnx2tf gave up on {graph.name or 'the model'} (exit {e.code})") from e
    finally:
        o2t.get_tf_model_outputs = original
    table = captured.get("layers")
    if model is None or table is None:
        raise LoweringError("onnx2tf returned no Keras model")
    # Keras numbers its models per process (model_1, model_3, ...) and the number ends up in
    # every .tflite tensor name: one fixed name makes the artifact the same byte for byte.
    model._name = "model"
    build = KerasBuild(model, _input_specs(model, graph, table), _output_specs(model, graph, table))
    _attribute_layers(build, graph, table)
    return build


def _entry(table: dict, name: str) -> dict | None:
    """onnx2tf's record for an ONNX value (it replaces ':' in names by '__')."""
    return table.get(name) or table.get(name.replace(":", "__"))


def _history_key(tensor: Any) -> tuple[int, int, int] | None:
    """Identity of a Keras tensor: (layer, call, output index)."""
    hist = getattr(tensor, "_keras_history", None)
    if hist is None or hist.layer is None:
        return None
    return id(hist.layer), hist.node_index, hist.tensor_index


def _attribute_layers(build: KerasBuild, graph: ir.Graph, table: dict) -> None:
    """Assign every Keras layer to the ONNX node it implements and rename it accordingly."""
    boundary = {_history_key(e["tf_node"]) for e in table.values()
                if isinstance(e, dict) and e.get("tf_node") is not None}
    owner: dict[int, str] = {}
    final: dict[str, Any] = {}
    for node in graph:  # topological order: a shared helper layer goes to its first user
        label = node_label(node)
        for value in node.outputs:
            entry = _entry(table, value.name or "")
            tensor = entry.get("tf_node") if entry else None
            if tensor is None or _history_key(tensor) is None:
                continue
            final[value.name or ""] = tensor._keras_history.layer
            stack = [tensor]
            while stack:
                hist = stack.pop()._keras_history
                layer = hist.layer
                if layer is None or id(layer) in owner or type(layer).__name__ == "InputLayer":
                    continue
                owner[id(layer)] = label
                for inp in layer._inbound_nodes[hist.node_index].keras_inputs:
                    if _history_key(inp) not in boundary:
                        stack.append(inp)
    for k, layer in enumerate(build.model.layers):
        if type(layer).__name__ == "InputLayer":
            continue
        owner_label = owner.get(id(layer))
        safe = re.sub(r"[^A-Za-z0-9_.]+", "_", owner_label or "aux").strip("_.") or "op"
        layer._name = f"n{k}__{safe}"  # k is unique per layer, so names cannot collide
        if owner_label is not None:
            build.layer_nodes[layer.name] = owner_label
    build.value_layers = {v: layer.name for v, layer in final.items()}


def channels_last_inputs(graph: ir.Graph) -> list[str]:
    """Inputs already channels-last in ONNX: every use is a Transpose to channels-first.

    tf2onnx (a .tflite or Keras source) writes NHWC inputs followed by that Transpose; onnx2tf
    would otherwise read the NHWC shape as NCHW and transpose it again, so the .tflite would
    take [1, H, C, W] instead of the original [1, H, W, C].
    """
    found = []
    for value in graph.inputs:
        rank = len(value.shape or ())
        uses = list(value.uses())
        first = (0, rank - 1, *range(1, rank - 1))
        if 3 <= rank <= 5 and uses and all(
                u.node.op_type == "Transpose" and tuple(u.node.attributes.get_ints("perm", ())) == first
                for u in uses):
            found.append(value.name or "")
    return found


def _o2t_names(names: list[str]) -> list[str] | None:
    """Names as onnx2tf spells them: it renames ``a:0`` to ``a__0`` before reading its options."""
    return sorted({*names, *(n.replace(":", "__") for n in names)}) or None


def _unique_permutation(keras_shape: list, shape: list) -> tuple[int, ...] | None:
    """The one axis permutation taking the Keras shape to the ONNX shape, if exactly one tensor layout does.

    onnx2tf sometimes moves a recurrent state's batch axis first ([2, 1, 128] -> [1, 2, 128]);
    the verification against float checks the values, this only reads the layout.
    """
    import itertools

    if len(keras_shape) != len(shape) or len(shape) > 6 or any(d is None for d in keras_shape):
        return None
    fits = {tuple(p) for p in itertools.permutations(range(len(shape))) if _fits([keras_shape[i] for i in p], shape)}
    # Permutations that only swap equal-sized axes read the same layout differently: ambiguous.
    return next(iter(fits)) if len(fits) == 1 else None


def _channels_last(rank: int) -> tuple[int, ...]:
    """The permutation NC... -> N...C for a tensor of ``rank`` dimensions."""
    return (0, *range(2, rank), 1)


def _fits(shape: list, want: list) -> bool:
    """True when two shapes agree wherever both are known."""
    return len(shape) == len(want) and all(
        a is None or b is None or a == b for a, b in zip(shape, want, strict=True))


def _onnx_shape(value: ir.Value) -> list:
    """A value's shape with symbolic dimensions as None."""
    return [d if isinstance(d, int) else None for d in (value.shape or [])]


def _input_specs(model: Any, graph: ir.Graph, table: dict) -> list[IOSpec]:
    """Match the Keras inputs to the ONNX inputs and record each layout change."""
    specs = []
    for i, kin in enumerate(model.inputs):
        match = [v for v in graph.inputs
                 if (e := _entry(table, v.name or "")) is not None and e.get("op") is kin]
        if len(match) != 1:
            raise LoweringError(f"cannot match Keras input {kin.name} to an ONNX graph input")
        value, entry = match[0], _entry(table, match[0].name or "")
        assert entry is not None
        shape, keras_shape = _onnx_shape(value), list(kin.shape)
        perm = tuple(range(len(shape)))
        flag = entry.get("ncw_nchw_ncdhw_perm")
        if flag and entry.get("tf_node") is kin and list(flag) != sorted(flag):
            perm = tuple(int(p) for p in np.argsort(flag))  # the Keras input itself is channels-last
        if not _fits([shape[p] for p in perm], keras_shape):
            raise LoweringError(f"input {value.name}: ONNX shape {shape} does not map to the "
                                f"Keras input shape {keras_shape} with permutation {perm}")
        specs.append(IOSpec(value.name or "", f"input_{i}", perm, kin.dtype.name))
    return specs


def _output_specs(model: Any, graph: ir.Graph, table: dict) -> list[IOSpec]:
    """Match the Keras outputs (onnx2tf keeps ONNX order) and record the layout change back."""
    outputs = list(graph.outputs)
    if len(model.outputs) != len(outputs):
        raise LoweringError(f"onnx2tf built {len(model.outputs)} outputs for {len(outputs)} ONNX "
                            "outputs (a constant or unused output?)")
    layouts = getattr(model, "onnx_output_layouts", {}) or {}
    specs = []
    for i, (kout, value) in enumerate(zip(model.outputs, outputs, strict=True)):
        shape, keras_shape = _onnx_shape(value), list(kout.shape)
        rank = len(keras_shape)
        channels_last = layouts.get(value.name, layouts.get((value.name or "").replace(":", "__")))
        identity = tuple(range(rank))
        perm = identity
        if channels_last and 3 <= rank <= 5:
            perm = tuple(int(p) for p in np.argsort(_channels_last(rank)))
            if shape and not _fits([keras_shape[p] for p in perm], shape) and _fits(keras_shape, shape):
                perm = identity  # onnx2tf flagged it channels-last but already transposed it back
        if shape and not _fits([keras_shape[p] for p in perm], shape):
            perm = _unique_permutation(keras_shape, shape) or perm
        if shape and not _fits([keras_shape[p] for p in perm], shape):
            raise LoweringError(f"output {value.name}: Keras shape {keras_shape} does not map to "
                                f"the ONNX shape {shape} with permutation {perm}")
        specs.append(IOSpec(value.name or "", f"output_{i}", perm, kout.dtype.name))
    return specs


def export_saved_model(build: KerasBuild, directory: Path) -> None:
    """Write the Keras model as a SavedModel whose signature uses the IOSpec names."""
    import tensorflow as tf
    import tf_keras

    model = build.model
    specs = [tf.TensorSpec(kin.shape, kin.dtype, name=spec.tflite_name)
             for kin, spec in zip(model.inputs, build.inputs, strict=True)]
    names = [spec.tflite_name for spec in build.outputs]

    def serve(*args: Any) -> dict[str, Any]:
        result = model(list(args) if len(args) > 1 else args[0], training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        return dict(zip(names, result, strict=True))

    archive = tf_keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=serve, input_signature=specs)
    archive.write_out(str(directory))
