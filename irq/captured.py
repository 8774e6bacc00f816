"""Capturing what libraries print, from Python and from native code, so irq itself stays quiet.

onnx2tf, tf_keras, tf2onnx, the TFLite converter and coremltools print progress and
diagnostics from Python and from C++ (``fully_quantize: 0, ...``, ``Failed to load
_MLModelProxy``); a library must not print, but the text is kept for error messages.
The context changes process-wide file descriptors 1 and 2 for its duration.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import IO


class CapturedOutput:
    """Text written to stdout/stderr (Python or native) inside :func:`captured_output`."""

    def __init__(self, sink: IO[bytes], python: io.StringIO) -> None:
        self._sink, self._python = sink, python
        self._final: str | None = None

    @property
    def text(self) -> str:
        """Everything captured so far (readable during and after the block)."""
        if self._final is not None:
            return self._final
        _flush_c_stdio()
        self._sink.seek(0)
        return self._python.getvalue() + self._sink.read().decode(errors="replace")

    def close(self) -> None:
        """Keep the text; the sink file goes away with the block."""
        self._final = self.text

    def tail(self, lines: int = 12) -> str:
        """The last ``lines`` non-empty lines, for error messages."""
        kept = [ln for ln in self.text.splitlines() if ln.strip()]
        return "\n".join(kept[-lines:])


@contextlib.contextmanager
def captured_output() -> Iterator[CapturedOutput]:
    """Collect everything printed by Python code and native libraries during the block.

    onnx2tf, tf_keras and the TFLite converter print progress and diagnostics from Python and
    from C++ (``fully_quantize: 0, ...``); a library must not print, but the text is kept for
    error messages.
    """
    py_buffer = io.StringIO()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    with tempfile.TemporaryFile() as sink:
        captured = CapturedOutput(sink, py_buffer)
        try:
            saved = [os.dup(1), os.dup(2)]
        except OSError:  # no descriptors 1/2 (a detached process): nothing native can leak
            saved = []
        try:
            for fd in (1, 2) if saved else ():
                os.dup2(sink.fileno(), fd)
            with contextlib.redirect_stdout(py_buffer), contextlib.redirect_stderr(py_buffer):
                yield captured
        finally:
            _flush_c_stdio()
            for fd, original in zip((1, 2), saved, strict=False):
                os.dup2(original, fd)
                os.close(original)
            captured.close()


def _flush_c_stdio() -> None:
    """Flush C stdio buffers so native output lands in the capture, not after it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)
