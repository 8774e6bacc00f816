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
    ("calibrate{method=minmax", "expected ',' or '}'"),
    ("calibrate{method=minmax}}", "unbalanced '}'"),
    ("fold-bn(cleanup)", "not a group"),
    ("fixpoint(cleanup", r"expected '\)'"),
    ('calibrate{method="minmax}', "unterminated quoted string"),
    ("calibrate{bits=[1,2]}", "takes one value, not a list"),
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
        n = qmodel.analysis.of("count").get("n", 0)
        if n >= self.limit:
            return PassResult(qmodel, False)
        qmodel.analysis.record("count", n=n + 1)
        return PassResult(qmodel, True)


@dataclass(frozen=True)
class _Boom(Pass):
    name = "boom"

    def run(self, qmodel):
        raise ZeroDivisionError("nothing to divide")


@dataclass(frozen=True)
class _NeedsCount(Pass):
    name = "needs-count"

    def requires(self, qmodel):
        return [] if qmodel.analysis.of("count").get("n") else ["nothing has counted yet"]

    def run(self, qmodel):
        return PassResult(qmodel, False)


def test_fixpoint_repeats_until_nothing_changes(tiny_cnn_proto):
    q = from_proto(tiny_cnn_proto, "tiny")
    result = PassManager([_Count(limit=4)], fixpoint=True)(q)
    assert result.modified and result.model.analysis.of("count")["n"] == 4
    assert PassManager([_Count(limit=4)])(from_proto(tiny_cnn_proto, "t")).model.analysis.of("count")["n"] == 1


def test_failing_pass_names_itself_and_the_passes_before(tiny_cnn_proto):
    q = from_proto(tiny_cnn_proto, "tiny")
    with pytest.raises(PassError, match=r"pass 'boom' failed on model 'tiny'.*passes run before: count"):
        PassManager([_Count(), _Boom()])(q)


def test_requirements_are_checked_on_the_ir(tiny_cnn_proto):
    with pytest.raises(PassError, match="'needs-count' cannot run on model 'tiny': nothing has counted yet"):
        PassManager([_NeedsCount()])(from_proto(tiny_cnn_proto, "tiny"))
    assert PassManager([_Count(), _NeedsCount()])(from_proto(tiny_cnn_proto, "tiny")).model.history == [
        "count", "needs-count"]


def test_a_plan_made_before_a_rewrite_is_stale(tiny_cnn_proto):
    """``plan-precision,fold-bn,insert-qdq`` used to pass the name check with a plan for another graph."""
    from irq.quant.spec import Precision

    q = from_proto(tiny_cnn_proto, "tiny")
    q.default_precision = Precision.INT8
    with pytest.raises(PassError, match="there is no precision plan"):
        PassManager(parse_pipeline("insert-qdq"))(q.clone())
    planned = PassManager(parse_pipeline("plan-precision"))(q).model
    assert planned.planned and planned.plan and not planned.stale_plan
    assert not PassManager([_Note()])(planned.clone()).model.stale_plan  # annotating keeps it current
    stale = PassManager([_Rewrite()])(planned.clone()).model
    assert stale.stale_plan == "rewrite"
    with pytest.raises(PassError, match="plan is stale: 'rewrite' rewrote the graph after plan-precision"):
        PassManager(parse_pipeline("insert-qdq"))(stale)
    replanned = PassManager(parse_pipeline("plan-precision"))(stale).model
    assert not replanned.stale_plan


@dataclass(frozen=True)
class _Note(Pass):
    name = "note"
    rewrites_graph = False

    def run(self, qmodel):
        qmodel.analysis.record(self.name, noted=True)
        return PassResult(qmodel, True)


@dataclass(frozen=True)
class _Rewrite(Pass):
    """Renames the first node: a graph rewrite that says so."""

    name = "rewrite"

    def run(self, qmodel):
        node = next(iter(qmodel.graph))
        node.name = (node.name or "n") + "_renamed"
        return PassResult(qmodel, True)


def test_pipelines_nest_and_a_fixpoint_repeats_only_its_group(tiny_cnn_proto):
    q = from_proto(tiny_cnn_proto, "tiny")
    inner = PassManager([_Count(limit=3)], fixpoint=True)
    timing = TimingInstrument()
    result = PassManager([_Count(limit=100), inner], [timing])(q)
    assert result.model.analysis.of("count")["n"] == 3  # the outer count ran once, the group until it stopped changing
    assert [n for n, _ in timing.timings] == ["count"] * 4  # outer instruments see the inner passes
    text = "fold-bn,fixpoint(fold-constants,cleanup),pipeline(analyze)"
    passes = parse_pipeline(text)
    assert isinstance(passes[1], PassManager) and passes[1].fixpoint and not passes[2].fixpoint
    assert format_pipeline(passes) == text


def test_instruments_time_dump_and_disable(tiny_cnn_proto, tmp_path):
    timing = TimingInstrument()
    passes = parse_pipeline("shape-inference,fold-constants,cleanup,fold-bn")
    PassManager(passes, [timing, DisablePassesInstrument(frozenset({"fold-constants"})),
                         DumpIRInstrument(tmp_path)])(from_proto(tiny_cnn_proto, "tiny"))
    assert [n for n, _ in timing.timings] == ["shape-inference", "cleanup", "fold-bn"]
    assert all(s >= 0 for _, s in timing.timings)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "001_shape-inference.onnx", "002_cleanup.onnx", "003_fold-bn.onnx"]


@dataclass(frozen=True)
class _Dangle(Pass):
    """Points the first node at a value nothing defines: the kind of bug --verify-each exists for."""

    name = "dangle"

    def run(self, qmodel):
        import onnx_ir as ir

        node = next(iter(qmodel.graph))
        node.replace_input_with(0, ir.Value(name="nowhere"))
        return PassResult(qmodel, True)


def test_verify_each_names_the_pass_that_broke_the_ir(tiny_cnn_proto):
    from irq.pipeline.verify_each import VerifyEachInstrument

    passes = [*parse_pipeline("shape-inference,fold-constants,cleanup,fold-bn"), _Dangle()]
    with pytest.raises(PassError, match=r"after pass 'dangle' \(pass 5 of this pipeline\).*nowhere"):
        PassManager(passes, [VerifyEachInstrument()])(from_proto(tiny_cnn_proto, "tiny"))
    PassManager(passes[:-1], [VerifyEachInstrument()])(from_proto(tiny_cnn_proto, "tiny"))  # the real ones hold


@pytest.mark.parametrize("target", ["onnx-int8", "onnx-fp16", "onnx-dynamic", "onnx-int4", "coreml-int8"])
def test_every_pass_of_a_target_holds_under_verify_each(tmp_path, target):
    """The real pipelines pass onnx's checker, the IR invariants and each pass's ensures, pass by pass."""
    from irq.cli import main
    from irq.data import save_npz
    from irq.zoo import calibration_data

    save_npz(tmp_path / "calib.npz", calibration_data("fashion-cnn", 64))
    assert main(["compile", "fashion-cnn", "-t", target, "--calib", str(tmp_path / "calib.npz"), "-o",
                 str(tmp_path / "out"), "--verify-each", "--no-latency", "--no-crash-test", "--no-layer-error"]) == 0
