"""Read a saved .mlpackage back (works on Linux) and check it against the IR it came from.

Four checks, each recorded in the artifact's info:

* weights: every constexpr weight op holds the IR's integers bit for bit (after the layout
  permutation the lowering recorded), the IR's float32 scales bit for bit where the package
  keeps them in float32, or exactly ``float16(scale)`` where an fp16 program stores them in
  float16 (see :mod:`irq.backends.coreml.convert`), and the IR's zero points; and every IR
  weight is in the package;
* activations: every MIL quantize/dequantize uses one of the IR's scale/zero-point pairs (in
  the stored dtype; coremltools' equivalent int8 <-> uint8 zero-point shift allowed);
* structure: the package has as many conv / conv_transpose / linear+matmul / pooling ops and
  constexpr weights as the IR implies;
* numerics: the package, evaluated by :mod:`reference_eval`, against onnxruntime on the IR.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import coremltools as ct
import numpy as np
from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
from coremltools.converters.mil.mil import Program, types

from irq.backends.coreml.context import attr
from irq.errors import VerificationError
from irq.ir.model import QModel, constant_array

IO_KEY = "irq.io"
WEIGHTS_KEY = "irq.weights"
WEIGHT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")


def load_program(path: Path) -> Program:
    """The MIL program inside a saved package (weights read from its weight file)."""
    try:
        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
        return milproto_load(spec, specification_version=spec.specificationVersion,
                             file_weights_dir=model.weights_dir)
    except Exception as e:  # coremltools raises bare Exceptions for unreadable packages
        raise VerificationError(f"{path}: cannot read the Core ML package back: {e}") from e


def read_metadata(path: Path) -> dict[str, Any]:
    """Irq's metadata stored in the package: I/O names and the weight records."""
    meta = ct.models.MLModel(str(path), skip_model_load=True).user_defined_metadata
    if IO_KEY not in meta:
        raise VerificationError(f"{path}: not written by irq (no {IO_KEY} metadata)")
    return {"io": json.loads(meta[IO_KEY]), "weights": json.loads(meta.get(WEIGHTS_KEY, "[]"))}


def op_census(program: Program) -> dict[str, int]:
    """How many ops of each type the program has (constants left out)."""
    return dict(Counter(op.op_type for op in program.functions["main"].operations if op.op_type != "const"))


def _ir_weights(qmodel: QModel) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Integer data, scale, zero point and axis of every constant DequantizeLinear in the IR."""
    found: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}
    for node in qmodel.graph:
        if node.op_type != "DequantizeLinear" or node.inputs[0] is None:
            continue
        data, scale = constant_array(node.inputs[0]), constant_array(node.inputs[1])
        if data is None or scale is None or data.dtype not in (np.int8, np.uint8):
            continue
        zp = constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
        if zp is None:
            zp = np.zeros(scale.shape, data.dtype)
        axis = int(attr(node, "axis", 1))
        found[str(node.inputs[0].name)] = (data, scale.astype(np.float32), zp, axis + data.ndim if axis < 0 else axis)
    return found


def _package_weight(op) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    """(data, per-channel scale, zero point, axis) of a constexpr weight op."""
    if op.op_type == "constexpr_affine_dequantize":
        scale = np.asarray(op.scale.val)
        zp = np.asarray(op.zero_point.val)
        return np.asarray(op.quantized_data.val), scale, zp, int(op.axis.val) if scale.ndim else None
    data, scale = np.asarray(op.data.val), np.asarray(op.scale.val)
    offset = np.zeros(scale.shape, data.dtype) if op.offset is None else np.asarray(op.offset.val)
    channel = [i for i, d in enumerate(scale.shape) if d > 1]
    if len(channel) == 1:
        return data, scale.reshape(-1), offset.reshape(-1), channel[0]
    return data, scale, offset, None  # per-tensor (size 1) or truly block-wise


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype and the same bytes in C order.

    A reshape, which coremltools may fold into a per-tensor constexpr, keeps the bytes; a
    transpose does not, and the lowering records it as a permutation.
    """
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.size == b.size and a.tobytes() == np.ascontiguousarray(b).tobytes()


def check_weights(program: Program, qmodel: QModel, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare every constexpr weight in the package with the IR's DequantizeLinear constants."""
    ir_weights = _ir_weights(qmodel)
    pool = [op for op in program.functions["main"].operations if op.op_type in WEIGHT_OPS]
    unmatched = list(pool)
    mismatches: list[str] = []
    scale_dtypes: Counter[str] = Counter()
    for rec in records:
        if rec["source"] not in ir_weights:
            mismatches.append(f"{rec['source']}: not a constant DequantizeLinear input in the IR")
            continue
        data, scale, zp, axis = ir_weights[rec["source"]]
        if rec["perm"] is not None:
            data, axis = np.ascontiguousarray(data.transpose(rec["perm"])), rec["perm"].index(axis)
        match, data_found = None, False
        for op in pool:
            p_data, p_scale, p_zp, p_axis = _package_weight(op)
            if not _same_bits(p_data, data):
                continue
            data_found = True
            want = scale if p_scale.dtype == np.float32 else scale.astype(p_scale.dtype)
            zp_ok = p_zp.size == zp.size and np.array_equal(p_zp.reshape(zp.shape), zp)
            axis_ok = scale.ndim == 0 or scale.size == 1 or p_axis == axis
            if p_scale.size == scale.size and _same_bits(p_scale.reshape(scale.shape), want) and zp_ok and axis_ok:
                match = op
                scale_dtypes[str(p_scale.dtype)] += 1
                break
        if match is None:
            what = "scales, zero points or axis differ" if data_found else "no constexpr op holds its integers"
            mismatches.append(f"{rec['source']}: {what}")
        elif match in unmatched:
            unmatched.remove(match)
    mismatches += [f"{op.name}: constexpr weight op not made from an IR weight" for op in unmatched]
    unplaced = sorted(set(ir_weights) - {r["source"] for r in records})
    return {"bit_exact": not mismatches and not unplaced,
            "weights_checked": len(records), "scale_dtypes": dict(scale_dtypes),
            "mismatches": mismatches[:20], "unplaced": unplaced[:20]}


def _activation_key(scale: np.ndarray, zp: np.ndarray | None, dtype: np.dtype) -> tuple[bytes, bytes]:
    """A scale (in ``dtype``) and zero point, the zero point as its uint8 equivalent.

    coremltools rewrites int8 zero point -128 as uint8 zero point 0 (and uint8 128 as int8 0):
    the same real values, so the check compares offsets from the storage type's minimum.
    """
    scale = np.asarray(scale).astype(dtype).reshape(-1)
    if zp is None:
        zp = np.zeros(scale.shape, np.uint8)
    zp = np.asarray(zp)
    shift = 128 if zp.dtype == np.int8 else 0
    return scale.tobytes(), (zp.astype(np.int32).reshape(-1) + shift).tobytes()


def check_activations(program: Program, qmodel: QModel) -> dict[str, Any]:
    """Every MIL quantize/dequantize in the package uses a scale and zero point of the IR's."""
    known: set[tuple[bytes, bytes]] = set()
    for node in qmodel.graph:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = constant_array(node.inputs[1])
        zp = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if scale is not None:
            with np.errstate(over="ignore"):  # a scale beyond fp16's range cannot match in fp16
                for dtype in (np.float32, np.float16):
                    known.add(_activation_key(scale, zp, np.dtype(dtype)))
    ops = [op for op in program.functions["main"].operations if op.op_type in ("quantize", "dequantize")]
    mismatches = []
    for op in ops:
        scale = np.asarray(op.scale.val)
        zp = None if op.zero_point is None else np.asarray(op.zero_point.val)
        if zp is None and op.op_type == "dequantize" and op.input.dtype is not None:
            zp = np.zeros(scale.shape, types.nptype_from_builtin(op.input.dtype))
        elif zp is None and op.op_type == "quantize":
            zp = np.zeros(scale.shape, np.dtype(op.output_dtype.val))
        if _activation_key(scale, zp, scale.dtype) not in known:
            mismatches.append(f"{op.name}: scale {scale.tolist()} / zero point {np.asarray(zp).tolist()} "
                              "is not one of the IR's")
    return {"exact": not mismatches, "checked": len(ops), "mismatches": mismatches[:20]}


def check_structure(census: dict[str, int], onnx_census: dict[str, int], records: int) -> dict[str, Any]:
    """Layer counts the package must keep: conv, conv_transpose, linear+matmul, pools, weights."""
    def pkg(*ops: str) -> int:
        return sum(census.get(o, 0) for o in ops)

    def src(*ops: str) -> int:
        return sum(onnx_census.get(o, 0) for o in ops)

    expected = {"conv": (pkg("conv"), src("Conv")),
                "conv_transpose": (pkg("conv_transpose"), src("ConvTranspose")),
                "linear+matmul": (pkg("linear", "matmul"), src("Gemm", "MatMul")),
                "max_pool": (pkg("max_pool"), src("MaxPool")),
                "avg_pool": (pkg("avg_pool"), src("AveragePool")),
                "weights": (pkg(*WEIGHT_OPS), records)}
    diffs = {k: {"package": p, "expected": e} for k, (p, e) in expected.items() if p != e}
    return {"match": not diffs, "differences": diffs,
            "quantize": pkg("quantize"), "dequantize": pkg("dequantize"),
            "onnx_quantize": src("QuantizeLinear")}
