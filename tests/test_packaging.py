"""The wheel puts only ``irq`` at the top of site-packages, with passes/frontends/backends inside."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_layout_and_imports(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("irq-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"irq"}
    for expected in ("irq/passes/calibrate.py", "irq/frontends/onnx_file.py", "irq/backends/onnx_qdq.py",
                     "irq/backends/tflite/backend.py", "irq/zoo/data/fashion_cnn.onnx",
                     "irq/schema/report.schema.json"):
        assert expected in names
    sources = {"irq": ROOT / "irq", "irq/passes": ROOT / "passes", "irq/frontends": ROOT / "frontends",
               "irq/backends": ROOT / "backends"}
    for prefix, folder in sources.items():  # pyproject.toml lists packages one by one: none forgotten
        for init in folder.rglob("__init__.py"):
            assert f"{prefix}/{init.relative_to(folder).as_posix()}" in names, init
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "irq = irq.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("import irq, irq.passes.calibrate, irq.frontends.onnx_file, irq.backends.onnx_qdq, irq.pipeline.registry;"
             "from irq import zoo; print(irq.__file__); print(zoo.get('fashion-cnn').onnx_path.exists())")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(site)) and out[1] == "True"
