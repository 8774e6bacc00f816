"""Every registered pass, plugins included, round-trips through its pipeline string with any option values."""

from __future__ import annotations

import dataclasses
import itertools
import typing

import pytest

from irq.errors import PipelineError
from irq.pipeline import registry
from irq.pipeline.grammar import format_value, parse
from irq.pipeline.registry import format_pipeline, parse_pipeline

#: Awkward values per option type: commas, braces, quotes, backslashes, spaces, "none", empty.
AWKWARD: dict[object, list[object]] = {
    bool: [True, False],
    int: [0, 1, 7, -3, 4096],
    float: [0.5, 99.9, 1e-07, -2.25, 12345.678],
    str: ["minmax", "percentile", "entropy", "mse", "a,b", "x{y}", 'say "hi"', "back\\slash", " padded ",
          "none", "", "[list]", "f(x)", "k=v"],
    tuple: [(), ("x:1x3x320x320",), ("a,b", "c|d", 'q"uote'), ("sr:16000", "state:2x1x128")],
}


def _candidates(hint: object) -> list[object]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        return [None, *_candidates(args[0])]
    return AWKWARD[tuple if typing.get_origin(hint) is tuple else hint]


def _instances(cls: type) -> list[object]:
    """The default instance and, per field, every awkward value the pass accepts."""
    hints = typing.get_type_hints(cls)
    found = [cls()]
    for f in dataclasses.fields(cls):
        for value in _candidates(hints[f.name]):
            try:
                found.append(cls(**{f.name: value}))
            except (ValueError, TypeError, PipelineError):
                continue  # the pass validates its options: that value is not one it takes
    return found


def _all_pass_classes() -> list[type]:
    return [registry.get_pass_class(name) for name in sorted(registry.available_passes())]


@pytest.mark.parametrize("cls", _all_pass_classes(), ids=lambda c: c.name)
def test_spec_round_trips_every_option_value(cls):
    instances = _instances(cls)
    fields = dataclasses.fields(cls)
    assert len(instances) >= 1 + (1 if fields else 0)  # at least one non-default value per pass with options
    for p in instances:
        (back,) = parse_pipeline(p.spec())
        assert back == p, p.spec()


def test_a_pipeline_of_all_passes_round_trips():
    passes = [inst for cls in _all_pass_classes() for inst in _instances(cls)[:2]]
    text = format_pipeline(passes)
    assert parse_pipeline(text) == passes
    assert format_pipeline(parse_pipeline(f"fixpoint({text})")) == f"fixpoint({text})"


def test_plugin_passes_round_trip_too(tmp_path, monkeypatch):
    from pathlib import Path

    plugin_dir = Path(__file__).parent / "plugin_pkg"
    info = tmp_path / "irq_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: irq_plugin_demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[irq.passes]\ncount-nodes = irq_plugin_demo:CountNodes\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(plugin_dir))
    registry._plugin_targets.cache_clear()
    try:
        cls = registry.get_pass_class("count-nodes")
        for p in _instances(cls):
            assert parse_pipeline(p.spec()) == [p]
    finally:
        registry._plugin_targets.cache_clear()


@pytest.mark.parametrize("value", list(itertools.chain(*AWKWARD.values())))
def test_formatted_values_parse_back_to_the_same_text(value):
    (element,) = parse(f"p{{k={format_value(value)}}}")
    raw = element.options["k"]
    if isinstance(value, tuple):
        assert raw == [str(v) for v in value]
    elif isinstance(value, bool):
        assert raw == str(value).lower()
    elif isinstance(value, float):
        assert float(raw) == value
    else:
        assert raw == str(value)
