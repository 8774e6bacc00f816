"""``irq demo``: the zoo's fashion-cnn through every target, as a table."""

from __future__ import annotations

import tempfile
from pathlib import Path

from irq.errors import IrqError
from irq.pipeline.targets import TARGETS
from irq.report.text import table


def run_demo(out_dir: str | Path | None = None, targets: list[str] | None = None) -> str:
    """Compile fashion-cnn for each target, verify on the shipped 1,000 test images, tabulate."""
    from irq import zoo
    from irq.compiler import compile as compile_model

    model = zoo.get("fashion-cnn")
    calib, evaluation = zoo.calibration_data("fashion-cnn", 200), zoo.eval_data("fashion-cnn")
    root = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="irq-demo-"))
    rows = []
    for name in targets or list(TARGETS):
        try:
            rows.append(compile_model(model.onnx_path, name, root / name, calib=calib, eval=evaluation))
        except IrqError as e:
            rows.append({"target": name, "error_message": str(e)})
    return (f"fashion-cnn on {len(evaluation)} Fashion-MNIST test images (artifacts in {root})\n"
            + table(rows))
