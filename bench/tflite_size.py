"""Where the bytes of an int8 .tflite go, and whether LiteRT accepts the per-channel metadata shortened.

    python bench/tflite_size.py INT8.tflite FP32.tflite

Prints the flatbuffer's parts against the fp32 file (weight buffers, int32 biases, per-channel
scales (float32) and zero points (int64, the schema's type), names, the rest), then writes a copy
whose all-zero per-channel zero-point vectors have one entry, and tries to load and run it in
LiteRT: the answer to "can the per-channel metadata be shared or shortened".
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np


def breakdown(path: Path) -> dict[str, int]:
    """Bytes per part of a .tflite."""
    from irq.backends.tflite.flatmodel import FlatModel

    data = path.read_bytes()
    flat = FlatModel(data)
    parts = {"file": len(data), "int8 buffers": 0, "int32 buffers": 0, "float buffers": 0, "scales": 0,
             "zero points": 0, "names": 0}
    for i, t in enumerate(flat.graph.tensors):
        buf = flat.obj.buffers[t.buffer].data
        kind = {"INT8": "int8 buffers", "INT32": "int32 buffers"}.get(flat.type_name(i), "float buffers")
        parts[kind] += 0 if buf is None else len(buf)
        q = t.quantization
        if q is not None:
            parts["scales"] += 4 * (0 if q.scale is None else len(q.scale))
            parts["zero points"] += 8 * (0 if q.zeroPoint is None else len(q.zeroPoint))
        parts["names"] += len(t.name or b"")
    parts["rest"] = parts["file"] - sum(v for k, v in parts.items() if k != "file")
    return parts


def shortened_zero_points(path: Path, out: Path) -> tuple[int, str]:
    """Write ``path`` with one zero point per all-zero per-channel vector; (size, what LiteRT said)."""
    from ai_edge_litert.interpreter import Interpreter

    from irq.backends.tflite.flatmodel import FlatModel

    flat = FlatModel(path.read_bytes())
    for t in flat.graph.tensors:
        q = t.quantization
        if q is not None and q.zeroPoint is not None and len(q.zeroPoint) > 1 and not np.any(q.zeroPoint):
            q.zeroPoint = np.zeros(1, np.int64)
    data = flat.to_bytes()
    out.write_bytes(data)
    try:
        interp = Interpreter(model_path=str(out))
        interp.allocate_tensors()
        d = interp.get_input_details()[0]
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interp.invoke()
        return len(data), "loads and runs"
    except (RuntimeError, ValueError) as e:
        return len(data), "refused: " + str(e).split("Tensor")[0].strip()


def main() -> int:
    """Command line."""
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    int8, fp32 = Path(sys.argv[1]), Path(sys.argv[2])
    float_size = fp32.stat().st_size
    for part, size in breakdown(int8).items():
        print(f"{part:14} {size:>10,} B  {100 * size / float_size:6.2f} % of fp32")
    with tempfile.TemporaryDirectory() as tmp:
        size, verdict = shortened_zero_points(int8, Path(tmp) / "short.tflite")
    print(f"one zero point per vector: {size:,} B ({100 * size / float_size:.1f} % of fp32); LiteRT: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
