"""Reading and validating a batch manifest (YAML or TOML) into ``irq.batch.schema`` types.

Every error is an InputError naming the manifest file and the entry and key at fault
(``batch.yaml: models[1] (resnet).budgets: unknown key 'max_size'``). Relative paths are
resolved against the manifest's folder. Raw mappings never leave this module.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from irq.batch.schema import Budgets, DataRef, JobSettings, JobSpec, Manifest, ModelRef
from irq.errors import InputError, IrqError
from irq.pipeline.recipe import Recipe, load_recipe, recipe_from_dict

_TOP_KEYS = ("defaults", "models", "python_path")
_SETTING_KEYS = ("targets", "calib", "eval", "calib_samples", "eval_samples", "recipe", "pipeline",
                 "disable_passes", "budgets", "latency", "io", "deployment_target")
_ENTRY_KEYS = ("name", "model", "overrides", *_SETTING_KEYS)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class _Layer:
    """The settings one level of the manifest states; UNSET where it says nothing."""

    targets: Any = UNSET
    calib: Any = UNSET
    eval: Any = UNSET
    calib_samples: Any = UNSET
    eval_samples: Any = UNSET
    recipe: Any = UNSET
    pipeline: Any = UNSET
    disable_passes: Any = UNSET
    budgets: tuple[tuple[str, float | None], ...] = ()
    latency: Any = UNSET
    io: Any = UNSET
    deployment_target: Any = UNSET


def read_raw(path: Path) -> Any:
    """The manifest file parsed as YAML (``.yaml``/``.yml``/``.json``) or TOML (``.toml``)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"{path}: cannot read manifest ({e.strerror})") from e
    try:
        return tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e})") from e
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e


def load_manifest(path: str | Path) -> Manifest:
    """Read, validate and expand a manifest into one JobSpec per model x target."""
    path = Path(path).resolve()
    raw = read_raw(path)
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a manifest must be a mapping with 'models' (and optional 'defaults')")
    _check_keys(raw, _TOP_KEYS, str(path))
    base = path.parent
    python_path = tuple(_existing(base, p, f"{path}: python_path[{i}]", folder=True)
                        for i, p in enumerate(_typed(raw.get("python_path", []), list, f"{path}: python_path")))
    defaults_raw = _typed(raw.get("defaults") or {}, dict, f"{path}: defaults")
    _check_keys(defaults_raw, _SETTING_KEYS, f"{path}: defaults")
    defaults = _layer(defaults_raw, base, f"{path}: defaults")
    entries = _typed(raw.get("models"), list, f"{path}: models")
    if not entries:
        raise InputError(f"{path}: 'models' lists no models")
    jobs: list[JobSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: models[{i}]"
        entry = _typed(entry, dict, where)
        model = _model_ref(entry.get("model"), base, where)
        name = _typed(entry.get("name", _default_name(model)), str, f"{where}.name")
        if not _NAME.match(name):
            raise InputError(f"{where}.name: {name!r} is not a usable folder name (letters, digits, . _ -)")
        if name in seen:
            raise InputError(f"{where}: name {name!r} is already used by models[{seen[name]}]; give it a 'name'")
        seen[name] = i
        where = f"{where} ({name})"
        _check_keys(entry, _ENTRY_KEYS, where)
        layer = _layer(entry, base, where)
        targets = layer.targets if layer.targets is not UNSET else defaults.targets
        if targets is UNSET:
            raise InputError(f"{where}: no 'targets' (here or in defaults)")
        overrides = _overrides(entry.get("overrides") or {}, targets, base, where)
        for target in targets:
            layers = [defaults, layer, *([overrides[target]] if target in overrides else [])]
            settings = _settings(layers, model, f"{where} target {target}")
            jobs.append(JobSpec(name, model, target, settings, python_path))
    return Manifest(path, tuple(jobs))


def _check_keys(raw: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")


def _typed(value: Any, kind: type, where: str) -> Any:
    # bool is an int subclass; a manifest's `true` is never a sample count
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{where}: expected {kind.__name__}, got {type(value).__name__} ({value!r})")
    return value


def _existing(base: Path, text: Any, where: str, folder: bool | None = None) -> Path:
    p = Path(_typed(text, str, where)).expanduser()
    p = p if p.is_absolute() else (base / p).resolve()
    if not p.exists():
        raise InputError(f"{where}: {p} not found")
    if folder is True and not p.is_dir():
        raise InputError(f"{where}: {p} is not a folder")
    return p


def _default_name(model: ModelRef) -> str:
    if model.kind == "onnx":
        return Path(model.spec).stem
    return model.spec.rpartition(":")[2] if model.kind == "callable" else model.spec


def _model_ref(value: Any, base: Path, where: str) -> ModelRef:
    text = _typed(value, str, f"{where}.model")
    if text.endswith(".onnx") or "/" in text:
        return ModelRef("onnx", str(_existing(base, text, f"{where}.model", folder=False)))
    if ":" in text:
        if not _CALLABLE.match(text):
            raise InputError(f"{where}.model: {text!r} is not package.module:function")
        return ModelRef("callable", text)
    from irq import zoo

    if text not in zoo.names():
        raise InputError(f"{where}.model: {text!r} is not an .onnx file, module:function or zoo model "
                         f"(zoo: {', '.join(zoo.names())})")
    return ModelRef("zoo", text)


def _layer(raw: dict[str, Any], base: Path, where: str) -> _Layer:
    """Type-check the setting keys of one manifest level."""
    from irq.pipeline.targets import TARGETS

    values: dict[str, Any] = {}
    if "targets" in raw:
        targets = [_typed(t, str, f"{where}.targets") for t in _typed(raw["targets"], list, f"{where}.targets")]
        for t in targets:
            if t not in TARGETS:
                raise InputError(f"{where}.targets: unknown target {t!r} (known: {', '.join(TARGETS)})")
        if not targets or len(set(targets)) != len(targets):
            raise InputError(f"{where}.targets: must be a non-empty list without repeats")
        values["targets"] = tuple(targets)
    for key in ("calib", "eval"):
        if key in raw:
            values[key] = _data_text(raw[key], base, f"{where}.{key}")
    for key in ("calib_samples", "eval_samples"):
        if key in raw:
            n = raw[key] if raw[key] is None else _typed(raw[key], int, f"{where}.{key}")
            if n is not None and n < 1:
                raise InputError(f"{where}.{key}: must be at least 1, got {n}")
            values[key] = n
    if "recipe" in raw:
        values["recipe"] = _recipe(raw["recipe"], base, f"{where}.recipe")
    if "pipeline" in raw:
        values["pipeline"] = _pipeline(raw["pipeline"], f"{where}.pipeline")
    if "disable_passes" in raw:
        values["disable_passes"] = _pass_names(raw["disable_passes"], f"{where}.disable_passes")
    if "latency" in raw:
        values["latency"] = _typed(raw["latency"], bool, f"{where}.latency")
    if "io" in raw:
        if raw["io"] not in ("int8", "float"):
            raise InputError(f"{where}.io: must be 'int8' or 'float', got {raw['io']!r}")
        values["io"] = raw["io"]
    if "deployment_target" in raw:
        values["deployment_target"] = _typed(raw["deployment_target"], str, f"{where}.deployment_target")
    if "budgets" in raw:
        values["budgets"] = _budgets(raw["budgets"], f"{where}.budgets")
    return _Layer(**values)


def _data_text(value: Any, base: Path, where: str) -> str | None:
    if value is None:
        return None
    text = _typed(value, str, where)
    if text.startswith("zoo:"):
        from irq import zoo

        name = text.removeprefix("zoo:")
        if name and name not in zoo.names():
            raise InputError(f"{where}: unknown zoo model {name!r} (zoo: {', '.join(zoo.names())})")
        return text
    path = _existing(base, text, where)
    if path.is_file() and path.suffix != ".npz":
        raise InputError(f"{where}: {path} is neither an .npz file nor an image folder")
    return str(path)


def _recipe(value: Any, base: Path, where: str) -> Recipe | None:
    if value is None:
        return None
    try:
        if isinstance(value, dict):
            return recipe_from_dict(value, where)
        return load_recipe(_existing(base, value, where, folder=False))
    except InputError as e:
        raise InputError(f"{where}: {e}") from e


def _pipeline(value: Any, where: str) -> str | None:
    if value is None:
        return None
    from irq.pipeline.registry import format_pipeline, parse_pipeline

    try:
        passes = parse_pipeline(_typed(value, str, where))
    except IrqError as e:
        raise InputError(f"{where}: {e}") from e
    if not passes:
        raise InputError(f"{where}: the pipeline is empty")
    return format_pipeline(passes)


def _pass_names(value: Any, where: str) -> tuple[str, ...]:
    from irq.pipeline.registry import available_passes

    names = tuple(_typed(v, str, where) for v in _typed(value, list, where))
    known = available_passes()
    for n in names:
        if n not in known:
            raise InputError(f"{where}: unknown pass {n!r} (known: {', '.join(sorted(known))})")
    return names


def _budgets(value: Any, where: str) -> tuple[tuple[str, float | None], ...]:
    items = []
    known = [f.name for f in dataclasses.fields(Budgets)]
    for key, v in _typed(value, dict, where).items():
        if key not in known:
            raise InputError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise InputError(f"{where}.{key}: expected a number, got {type(v).__name__} ({v!r})")
        items.append((key, None if v is None else float(v)))
    return tuple(items)


def _overrides(raw: Any, targets: tuple[str, ...], base: Path, where: str) -> dict[str, _Layer]:
    out = {}
    for target, layer_raw in _typed(raw, dict, f"{where}.overrides").items():
        here = f"{where}.overrides.{target}"
        if target not in targets:
            raise InputError(f"{here}: {target!r} is not one of this entry's targets ({', '.join(targets)})")
        layer_raw = _typed(layer_raw, dict, here)
        _check_keys(layer_raw, tuple(k for k in _SETTING_KEYS if k != "targets"), here)
        out[target] = _layer(layer_raw, base, here)
    return out


def _settings(layers: list[_Layer], model: ModelRef, where: str) -> JobSettings:
    """Merge layers (later wins; budgets key by key) into the job's settings."""
    def pick(key: str, default: Any) -> Any:
        for layer in reversed(layers):
            value = getattr(layer, key)
            if value is not UNSET:
                return value
        return default

    budgets = Budgets(**dict(item for layer in layers for item in layer.budgets))
    return JobSettings(
        calib=_data_ref(pick("calib", None), pick("calib_samples", None), model, f"{where}: calib"),
        eval=_data_ref(pick("eval", None), pick("eval_samples", None), model, f"{where}: eval"),
        recipe=pick("recipe", None), pipeline=pick("pipeline", None),
        disable_passes=pick("disable_passes", ()), budgets=budgets, latency=pick("latency", True),
        io=pick("io", None), deployment_target=pick("deployment_target", None))


def _data_ref(text: str | None, samples: int | None, model: ModelRef, where: str) -> DataRef | None:
    if text is None:
        return None
    if text.startswith("zoo:"):
        name = text.removeprefix("zoo:")
        if not name:
            if model.kind != "zoo":
                raise InputError(f"{where}: 'zoo:' (this model's zoo data) needs a zoo model, not {model.spec}")
            name = model.spec
        return DataRef(zoo=name, samples=samples)
    return DataRef(path=Path(text), samples=samples)

