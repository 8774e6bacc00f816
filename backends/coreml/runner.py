"""Running a saved package: Core ML itself on macOS, the read-back evaluator elsewhere.

The runner needs only the package: irq's user-defined metadata in it maps the ONNX input and
output names (and dtypes) to Core ML's. Inputs are converted at the boundary (int64 -> int32)
and batches larger than the package's fixed batch are run in slices and concatenated.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from irq.backends.base import Runner
from irq.backends.coreml.readback import load_program, read_metadata
from irq.backends.coreml.reference_eval import evaluate
from irq.errors import DataError

_CORE_ML_DTYPES = {"int64": np.int32, "int32": np.int32, "float16": np.float16}


class CoreMLRunner(Runner):
    """Runs an irq-written .mlpackage with ONNX names, layout and dtypes at its boundary."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.io = read_metadata(self.path)["io"]
        self.runtime = self.platform_runtime()
        if self.runtime == "coreml":
            import coremltools as ct

            self._model = ct.models.MLModel(str(self.path))
        else:  # Core ML prediction exists only on Apple platforms
            self._program = load_program(self.path)

    @staticmethod
    def platform_runtime() -> str:
        """The runtime a runner uses on this machine."""
        return "coreml" if sys.platform == "darwin" else "coreml-readback"

    @property
    def max_batch(self) -> int | None:
        """The package's fixed batch size."""
        return int(self.io["inputs"][0]["shape"][0]) if self.io["inputs"] else None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run a batch (split into the package's fixed batch) and return ONNX-ordered outputs."""
        missing = [i["onnx"] for i in self.io["inputs"] if i["onnx"] not in feeds]
        if missing:
            raise DataError(f"{self.path}: missing inputs {missing}")
        if all(list(np.shape(feeds[i["onnx"]])) == i["shape"] for i in self.io["inputs"]):
            return self._run_one(feeds)
        n = len(feeds[self.io["inputs"][0]["onnx"]])
        step = self.max_batch or n
        if n % step:
            raise DataError(f"{self.path}: batch {n} is not a multiple of the package's batch {step}")
        chunks = [self._run_one({k: v[i:i + step] for k, v in feeds.items()}) for i in range(0, n, step)]
        return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]

    def _run_one(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = {}
        for spec in self.io["inputs"]:
            x = np.asarray(feeds[spec["onnx"]])
            if list(x.shape) != spec["shape"]:
                raise DataError(f"{self.path}: input {spec['onnx']!r} has shape {list(x.shape)}, "
                                f"the package takes {spec['shape']}")
            inputs[spec["coreml"]] = x.astype(_CORE_ML_DTYPES.get(spec["dtype"], np.float32))
        results = self._model.predict(inputs) if self.runtime == "coreml" else evaluate(self._program, inputs)
        return [np.asarray(results[o["coreml"]]).astype(o["dtype"]) for o in self.io["outputs"]]
