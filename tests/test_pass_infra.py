"""Pass infrastructure: pipeline strings, registry errors, instruments, composition."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from irq.errors import PassError, PipelineError
from irq.frontends.onnx_file import from_proto
from irq.pipeline.infra import (
    DisablePassesInstrument,
    DumpIRInstrument,
    Pass,
    PassManager,
    PassResult,
    TimingInstrument,
)
from irq.pipeline.registry import format_pipeline, parse_pipeline


def test_pipeline_string_round_trips_with_options():
    passes = parse_pipeline("fold-bn,calibrate{method=percentile,percentile=99.9},insert-qdq{activations=false}")
    assert [p.name for p in passes] == ["fold-bn", "calibrate", "insert-qdq"]
    assert passes[1].method == "percentile" and passes[1].percentile == pytest.approx(99.9)
    assert passes[2].activations is False
    expected = "fold-bn,calibrate{method=percentile,percentile=99.9},insert-qdq{activations=false}"
    assert format_pipeline(passes) == expected
    assert format_pipeline(parse_pipeline(format_pipeline(passes))) == format_pipeline(passes)


@pytest.mark.parametrize("text, message", [
    ("fold-bn,no-such-pass", "unknown pass 'no-such-pass'"),
    ("calibrate{colour=red}", "has no option 'colour'"),
    ("calibrate{method=median}", "unknown calibration method 'median'"),
    ("calibrate{percentile=abc}", "could not convert string to float"),
    ("insert-qdq{activations=maybe}", "expected true/false"),
    ("calibrate{method=minmax", "unbalanced"),
    ("calibrate{method}", "key=value"),
])
def test_bad_pipeline_strings_name_the_problem(text, message):
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(text)


@dataclass(frozen=True)
class _Count(Pass):
    name = "count"
    limit: int = 3

    def run(self, qmodel):
        n = qmodel.analysis.get("n", 0)
        if n >= self.limit:
            return PassResult(qmodel, False)
        qmodel.analysis["n"] = n + 1
        return PassResult(qmodel, True)


@dataclass(frozen=True)
class _Boom(Pass):
    name = "boom"

    def run(self, qmodel):
        raise ZeroDivisionError("nothing to divide")


@dataclass(frozen=True)
class _NeedsCount(Pass):
    name = "needs-count"
    requires = ("count",)

    def run(self, qmodel):
        return PassResult(qmodel, False)


def test_fixpoint_repeats_until_nothing_changes(tiny_cnn_proto):
    q = from_proto(tiny_cnn_proto, "tiny")
    result = PassManager([_Count(limit=4)], fixpoint=True)(q)
    assert result.modified and result.model.analysis["n"] == 4
    assert PassManager([_Count(limit=4)])(from_proto(tiny_cnn_proto, "t")).model.analysis["n"] == 1


def test_failing_pass_names_itself_and_the_passes_before(tiny_cnn_proto):
    q = from_proto(tiny_cnn_proto, "tiny")
    with pytest.raises(PassError, match=r"pass 'boom' failed on model 'tiny'.*passes run before: count"):
        PassManager([_Count(), _Boom()])(q)


def test_requirements_are_checked(tiny_cnn_proto):
    with pytest.raises(PassError, match="needs count to run first"):
        PassManager([_NeedsCount()])(from_proto(tiny_cnn_proto, "tiny"))


def test_instruments_time_dump_and_disable(tiny_cnn_proto, tmp_path):
    timing = TimingInstrument()
    passes = parse_pipeline("shape-inference,fold-constants,cleanup,fold-bn")
    PassManager(passes, [timing, DisablePassesInstrument(frozenset({"fold-constants"})),
                         DumpIRInstrument(tmp_path)])(from_proto(tiny_cnn_proto, "tiny"))
    assert [n for n, _ in timing.timings] == ["shape-inference", "cleanup", "fold-bn"]
    assert all(s >= 0 for _, s in timing.timings)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "001_shape-inference.onnx", "002_cleanup.onnx", "003_fold-bn.onnx"]
