"""Probes: extra outputs of the float model that reduce a tensor to a per-channel mean, in one run.

Passes that need statistics of many tensors over the calibration data (bias correction's
output shifts, weight-scale search's input energies) add small reduction subgraphs to a copy
of the float model and average their outputs over the data, so nothing but the means is kept
in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from irq.data import DataSet
from irq.ir.ort import batch_limit, make_session

#: Samples a probe run takes at once: onnxruntime's activation buffers for a batch of 16 cost
#: ResNet-50 1.5 GB more peak memory than one sample at a time, for no time saved.
PROBE_BATCH = 1


def add_channel_mean(proto: onnx.ModelProto, source: str, name: str, axes: Sequence[int],
                     op: str = "ReduceMean") -> None:
    """Append ``name`` = ``op``(``source``) over ``axes`` (keepdims 0) as a graph output (ReduceMean or ReduceMax)."""
    graph = proto.graph
    if max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18:
        graph.initializer.append(numpy_helper.from_array(np.asarray(list(axes), np.int64), f"{name}_axes"))
        graph.node.append(helper.make_node(op, [source, f"{name}_axes"], [name], keepdims=0))
    else:  # reductions took their axes as an attribute before opset 18
        graph.node.append(helper.make_node(op, [source], [name], keepdims=0, axes=list(axes)))
    graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))


def batch_outputs(model: onnx.ModelProto | bytes, data: DataSet,
                  batch_size: int = PROBE_BATCH) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(rows, every output of ``model``) per batch of ``data``, batches as large as the model and data allow.

    Given serialized bytes (which the caller then drops), no copy of the model but the
    session's outlives its creation.
    """
    session = make_session(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model)
    del model
    names = {i.name for i in session.get_inputs()}
    size = max(1, min(batch_size, data.max_batch() or batch_size, batch_limit(session) or batch_size))
    for start in range(0, len(data), size):
        stop = min(start + size, len(data))
        yield stop - start, session.run(None, {k: v for k, v in data.feed(start, stop).items() if k in names})


def mean_outputs(model: onnx.ModelProto | bytes, data: DataSet, batch_size: int = PROBE_BATCH,
                 combine: str = "mean") -> list[np.ndarray]:
    """Every output of ``model`` over the samples of ``data``: averaged (weighted by batch size), or ``max``."""
    sums: list[np.ndarray] = []
    for rows, means in batch_outputs(model, data, batch_size):
        if not sums:
            sums = [np.full(m.shape, -np.inf if combine == "max" else 0.0) for m in means]
        for s, m in zip(sums, means, strict=True):  # in place: the means may be whole input images
            if combine == "max":
                np.maximum(s, m, out=s)
            else:
                np.add(s, m if rows == 1 else m.astype(np.float64) * rows, out=s)
    return [s if combine == "max" else s / max(len(data), 1) for s in sums]


def _channel_stat(proto: onnx.ModelProto, values: Sequence[tuple[str, tuple[int, ...]]], data: DataSet,
                  batch_size: int, elementwise: str, reduce: str, combine: str) -> dict[str, np.ndarray]:
    """Per channel, ``reduce`` of ``elementwise``(tensor) over ``axes``, combined over ``data``'s batches."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.output[:]
    wanted = dict(values)
    for i, (source, axes) in enumerate(wanted.items()):
        name = f"irq_{elementwise.lower()}_probe_{i}"
        inputs = [source, source] if elementwise == "Mul" else [source]
        probe.graph.node.append(helper.make_node(elementwise, inputs, [f"{name}_x"]))
        add_channel_mean(probe, f"{name}_x", name, axes, op=reduce)
    stats = mean_outputs(probe, data, batch_size, combine=combine)
    return {source: m.astype(np.float32) for source, m in zip(wanted, stats, strict=True)}


def channel_energy(proto: onnx.ModelProto, values: Sequence[tuple[str, tuple[int, ...]]], data: DataSet,
                   batch_size: int = PROBE_BATCH) -> dict[str, np.ndarray]:
    """Per channel, the mean square of each named tensor over ``data``.

    ``values`` pairs a tensor's name with the axes to average over (all but its channel axis).
    """
    return _channel_stat(proto, values, data, batch_size, "Mul", "ReduceMean", "mean")


def channel_absmax(proto: onnx.ModelProto, values: Sequence[tuple[str, tuple[int, ...]]], data: DataSet,
                   batch_size: int = PROBE_BATCH) -> dict[str, np.ndarray]:
    """Per channel, the largest magnitude of each named tensor over ``data`` (axes as in channel_energy)."""
    return _channel_stat(proto, values, data, batch_size, "Abs", "ReduceMax", "max")


#: Values of one tensor a calibration batch of 16 samples hands back for its histogram.
RANGE_SAMPLE = 1 << 17


def add_range_probe(proto: onnx.ModelProto, source: str, name: str, sample: int) -> list[str]:
    """Append outputs: ``source``'s min and max (scalars) and, with ``sample`` > 0, every k-th value.

    k = size // ``sample`` rounded up to odd (an odd stride does not alias with a channel
    layout of even size), computed in the graph, so a batch returns at most about ``sample``
    values of each tensor instead of the whole activation: memory and copying stay flat in the
    model's activation sizes. Reductions without axes reduce everything at every opset.
    """
    graph = proto.graph
    outs = [f"{name}_min", f"{name}_max"]
    graph.node.append(helper.make_node("ReduceMin", [source], [outs[0]], keepdims=0))
    graph.node.append(helper.make_node("ReduceMax", [source], [outs[1]], keepdims=0))
    if sample:
        consts = {"flat": [-1], "two_k": [2 * sample], "two": [2], "one": [1], "zero": [0],
                  "end": [2**62]}
        for key, value in consts.items():
            graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.int64), f"{name}_{key}"))
        graph.node.extend([
            helper.make_node("Reshape", [source, f"{name}_flat"], [f"{name}_flatv"]),
            helper.make_node("Size", [source], [f"{name}_size"]),
            helper.make_node("Div", [f"{name}_size", f"{name}_two_k"], [f"{name}_half"]),
            helper.make_node("Mul", [f"{name}_half", f"{name}_two"], [f"{name}_even"]),
            helper.make_node("Add", [f"{name}_even", f"{name}_one"], [f"{name}_stride"]),
            helper.make_node("Slice", [f"{name}_flatv", f"{name}_zero", f"{name}_end", f"{name}_zero",
                                       f"{name}_stride"], [f"{name}_sample"]),
        ])
        outs.append(f"{name}_sample")
    for out, shape in zip(outs, ([], [], ["n"]), strict=False):
        graph.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, shape))
    return outs
