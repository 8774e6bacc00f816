"""irq's modules import each other without cycles and along the data flow (issue: one driver, no cycles)."""

from __future__ import annotations

from pathlib import Path

from irq.tools.cycles import cycles, forbidden_edges, import_graph

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycle_and_no_import_against_the_data_flow():
    graph = import_graph(ROOT)
    assert graph.number_of_nodes() > 100  # it read the whole tree, passes, frontends and backends included
    assert any(n.startswith("irq.passes.") for n in graph) and any(n.startswith("irq.backends.") for n in graph)
    assert cycles(graph) == []
    assert forbidden_edges(graph) == []


def test_a_cycle_hidden_in_a_function_is_found(tmp_path):
    (tmp_path / "irq").mkdir()
    (tmp_path / "irq" / "__init__.py").write_text("")
    (tmp_path / "irq" / "a.py").write_text("from irq.b import g\n\ndef f():\n    return g()\n")
    (tmp_path / "irq" / "b.py").write_text("def g():\n    from irq import a\n    return a\n")
    (tmp_path / "irq" / "c.py").write_text("from typing import TYPE_CHECKING\n"
                                           "if TYPE_CHECKING:\n    from irq import a\n")
    (tmp_path / "irq" / "verify").mkdir()
    (tmp_path / "irq" / "verify" / "__init__.py").write_text("")
    (tmp_path / "irq" / "verify" / "checks.py").write_text("def run():\n    from irq.compiler import quantize\n")
    (tmp_path / "irq" / "compiler.py").write_text("")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["irq.a", "irq.b"]]
    assert not graph.has_edge("irq.c", "irq.a")  # type-checking imports never run
    assert [e.split(":")[0] for e in forbidden_edges(graph)] == ["irq.verify.checks"]
