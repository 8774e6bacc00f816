"""Third-party passes are discovered through the ``irq.passes`` entry-point group.

The plugin package lives in tests/plugin_pkg; its distribution metadata is written to a
temporary site folder, so discovery goes through importlib.metadata exactly as for an
installed wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from irq.errors import PipelineError
from irq.frontends.onnx_file import from_proto
from irq.pipeline import registry
from irq.pipeline.infra import PassManager

PLUGIN_DIR = Path(__file__).parent / "plugin_pkg"


def _install(site: Path, dist: str, entries: dict[str, str]) -> None:
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[irq.passes]\n{lines}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    registry._plugin_targets.cache_clear()
    yield tmp_path
    registry._plugin_targets.cache_clear()
    sys.modules.pop("irq_plugin_demo", None)


def test_plugin_pass_is_found_and_runs(site, tiny_cnn_proto):
    _install(site, "irq_plugin_demo", {"count-nodes": "irq_plugin_demo:CountNodes"})
    assert "count-nodes" in registry.available_passes()
    (p,) = registry.parse_pipeline("count-nodes{prefix=demo}")
    q = PassManager([p])(from_proto(tiny_cnn_proto, "tiny")).model
    assert q.analysis.of("count-nodes")["demo_nodes"] == len(list(q.graph))


def test_duplicate_plugin_names_are_errors(site):
    _install(site, "irq_plugin_demo", {"count-nodes": "irq_plugin_demo:CountNodes"})
    _install(site, "irq_plugin_other", {"count-nodes": "irq_plugin_demo:Other"})
    with pytest.raises(PipelineError, match="registered twice"):
        registry.available_passes()


def test_plugin_cannot_shadow_a_builtin(site):
    _install(site, "irq_plugin_demo", {"fold-bn": "irq_plugin_demo:CountNodes"})
    with pytest.raises(PipelineError, match="clashes with the built-in"):
        registry.available_passes()
