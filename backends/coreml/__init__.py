"""Core ML backend: lowers the IR directly to a MIL ML Program (``model.mlpackage``).

Flow: :mod:`.lower` walks the ONNX graph and, through the op registry (:mod:`.registry`,
``ops_*.py``), builds a MIL program in memory with coremltools' builder; constant DQ weights
become constexpr ops holding the IR's integers (:mod:`.context`, :mod:`.ops_quant`);
:mod:`.convert` runs coremltools' pipeline and attaches irq's metadata; :mod:`.backend` saves
the package atomically and checks it by reading it back (:mod:`.readback`), evaluating it
with numpy (:mod:`.reference_eval`, :mod:`.mil_kernels`) and comparing with onnxruntime.
:mod:`.runner` runs packages (Core ML on macOS, the evaluator elsewhere). Deployment targets:
:mod:`.deploy`.
"""

from irq.backends.coreml.backend import CoreMLBackend

__all__ = ["CoreMLBackend"]
