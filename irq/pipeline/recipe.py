"""Recipes: per-layer overrides (regex on node names / op types) and scheme settings, as data.

A recipe is YAML (or JSON)::

    calibration: mse            # minmax | percentile | entropy | mse
    activation: int8            # int8 | uint8 (scheme override)
    per_channel: true
    reduce_range: auto          # auto | yes | no: 7-bit GEMM weights (x86 without VNNI)
    layers:
      - {name: "^/features/0/", precision: fp32}        # keep the stem in float
      - {op_type: "Softmax|LayerNormalization", precision: skip}
      - {name: "classifier", granularity: per-tensor}

``precision`` is int8, int16, fp16, fp32, dynamic-int8, int4-weight, int8-weight or ``skip``
(= the float precision of the target). Later rules win over earlier ones.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from irq.errors import InputError
from irq.quant.ranges import CALIBRATION_METHODS
from irq.quant.spec import Precision, QType, Scheme

_ACTIVATION_TYPES = ("int8", "uint8")

_LAYER_KEYS = {"name", "op_type", "precision", "granularity"}
_TOP_KEYS = {"calibration", "activation", "per_channel", "layers", "percentile", "reduce_range"}


@dataclass(frozen=True)
class LayerRule:
    """One override: which nodes it matches and what it sets."""

    name: str = ""
    op_type: str = ""
    precision: str = ""
    granularity: str = ""

    def __post_init__(self) -> None:
        for pattern in (self.name, self.op_type):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"bad regex {pattern!r}: {e}") from e
        if self.precision and self.precision != "skip":
            Precision(self.precision)
        if self.granularity not in ("", "per-channel", "per-tensor"):
            raise ValueError(f"granularity must be per-channel or per-tensor, not {self.granularity!r}")
        if not (self.name or self.op_type):
            raise ValueError("a layer rule needs 'name' or 'op_type'")

    def matches(self, node_name: str, op_type: str) -> bool:
        """True when both given patterns match (search semantics, an empty pattern matches all)."""
        return bool((not self.name or re.search(self.name, node_name))
                    and (not self.op_type or re.fullmatch(self.op_type, op_type)))


@dataclass(frozen=True)
class Recipe:
    """Scheme overrides plus ordered layer rules."""

    layers: tuple[LayerRule, ...] = ()
    calibration: str = ""
    activation: str = ""
    per_channel: bool | None = None
    percentile: float | None = None
    reduce_range: str = ""
    source: str = field(default="<inline>", compare=False)

    def __post_init__(self) -> None:
        if self.calibration and self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, not {self.calibration!r}")
        if self.activation and self.activation not in _ACTIVATION_TYPES:
            raise ValueError(f"activation must be one of {', '.join(_ACTIVATION_TYPES)}, not {self.activation!r}")
        if self.per_channel is not None and not isinstance(self.per_channel, bool):
            raise ValueError(f"per_channel must be true or false, not {self.per_channel!r}")
        if self.percentile is not None and (isinstance(self.percentile, bool)
                                            or not isinstance(self.percentile, int | float)
                                            or not 50.0 < float(self.percentile) <= 100.0):
            raise ValueError(f"percentile must be a number in (50, 100], not {self.percentile!r}")
        if self.reduce_range and self.reduce_range not in ("auto", "yes", "no"):
            raise ValueError(f"reduce_range must be auto, yes or no, not {self.reduce_range!r}")

    def apply_to(self, scheme: Scheme) -> Scheme:
        """The scheme with this recipe's overrides."""
        changes: dict[str, Any] = {}
        if self.calibration:
            changes["calibration"] = self.calibration
        if self.activation:
            changes["activation"] = QType(self.activation)
        if self.per_channel is not None:
            changes["per_channel"] = self.per_channel
        if self.reduce_range:
            changes["reduce_range"] = self.reduce_range
        return dataclasses.replace(scheme, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that ``from_dict`` reads back (for writing recipes out)."""
        out: dict[str, Any] = {}
        for key in ("calibration", "activation", "per_channel", "percentile", "reduce_range"):
            value = getattr(self, key)
            if value not in ("", None):
                out[key] = value
        out["layers"] = [{k: v for k, v in dataclasses.asdict(r).items() if v} for r in self.layers]
        return out


def _yes_no(value: Any) -> str:
    """YAML reads yes/no as booleans; the recipe keeps the words."""
    return {True: "yes", False: "no"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def recipe_from_dict(raw: Any, source: str = "<inline>") -> Recipe:
    """Validate and build a Recipe; InputError names the file and the bad entry."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{source}: a recipe must be a mapping")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise InputError(f"{source}: unknown recipe keys {sorted(unknown)} (known: {sorted(_TOP_KEYS)})")
    layers = raw.get("layers") or []
    if not isinstance(layers, list):
        raise InputError(f"{source}: 'layers' must be a list of rules")
    rules = []
    for i, entry in enumerate(layers):
        if not isinstance(entry, dict) or set(entry) - _LAYER_KEYS:
            raise InputError(f"{source}: layers[{i}] must be a mapping with keys {sorted(_LAYER_KEYS)}")
        try:
            rules.append(LayerRule(**{k: str(v) for k, v in entry.items()}))
        except ValueError as e:
            raise InputError(f"{source}: layers[{i}]: {e}") from e
    try:
        recipe = Recipe(tuple(rules), str(raw.get("calibration", "")), str(raw.get("activation", "")),
                        raw.get("per_channel"), raw.get("percentile"), _yes_no(raw.get("reduce_range", "")), source)
        recipe.apply_to(Scheme())
    except ValueError as e:
        raise InputError(f"{source}: {e}") from e
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise InputError(f"{path}: cannot read recipe ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    return recipe_from_dict(raw, str(path))


def save_recipe(path: Path, recipe: Recipe) -> None:
    """Write a recipe as YAML (atomically)."""
    from irq.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
