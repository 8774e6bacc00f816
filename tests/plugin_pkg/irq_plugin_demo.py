"""A tiny third-party pass package used by tests/test_plugins.py."""

from __future__ import annotations

from dataclasses import dataclass

from irq.pipeline.infra import Pass, PassResult


@dataclass(frozen=True)
class CountNodes(Pass):
    """Record the number of nodes under ``<prefix>_nodes`` in the pass's analysis record."""

    name = "count-nodes"
    prefix: str = "plugin"

    def run(self, qmodel):
        """Count without changing anything."""
        qmodel.analysis.record(self.name, **{f"{self.prefix}_nodes": len(list(qmodel.graph))})
        return PassResult(qmodel, False)


@dataclass(frozen=True)
class Other(CountNodes):
    """A second class claiming the same name."""
