"""Crash test: extreme inputs through an artifact in its own runtime, in a child process.

The cases are built from the evaluation data's range per input ("black" is its minimum,
"white" its maximum): constants, uniform noise over the range, values ten times beyond it,
NaN and inf, and odd spatial sizes for models that take any height and width. All cases run in
a child process (``python -m irq.verify.crashtest_child``) that reports case by case: a runtime that
segfaults or hangs ends the child, not irq; the parent records the case that did it and
carries on from the next case in a fresh child.

Checks per case: it ran; its outputs are finite (for NaN/inf inputs a non-finite output is
accepted but reported); samples that differ do not all give one output; an int8 output is not
pinned to its qmin/qmax. The float model runs on the same inputs, so each finding says whether
float behaves the same way.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from irq.data import DataSet


@dataclass(frozen=True)
class CrashTestOptions:
    """How many samples per case, how far outside the range, and the child's time limit."""

    samples: int = 4
    far_factor: float = 10.0
    timeout_s: float = 300.0
    seed: int = 0


@dataclass(frozen=True)
class Case:
    """One extreme input: feeds, whether its samples differ, whether it holds NaN/inf."""

    name: str
    feeds: dict[str, np.ndarray]
    description: str
    varied: bool = False
    nonfinite: bool = False
    spatial: bool = False


def data_range(data: DataSet) -> dict[str, tuple[float, float]]:
    """Minimum and maximum of each input over the data (read batch by batch)."""
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for batch in data.batches(256):
        for k, v in batch.items():
            lo[k] = min(lo.get(k, np.inf), float(np.min(v)))
            hi[k] = max(hi.get(k, -np.inf), float(np.max(v)))
    return {k: (lo[k], hi[k]) for k in lo}


def _spatial_axes(model: onnx.ModelProto, name: str) -> tuple[int, int] | None:
    """The (H, W) axes of a rank-4 input whose two spatial dims are both dynamic."""
    for v in model.graph.input:
        if v.name != name:
            continue
        dims = v.type.tensor_type.shape.dim
        dynamic = [not d.HasField("dim_value") for d in dims]
        if len(dims) == 4 and dynamic[2] and dynamic[3]:
            return 2, 3
        if len(dims) == 4 and dynamic[1] and dynamic[2] and not dynamic[3]:
            return 1, 2
    return None


def build_cases(data: DataSet, float_model: onnx.ModelProto, options: CrashTestOptions) -> list[Case]:
    """The extreme inputs for a model, shaped like ``options.samples`` samples of ``data``."""
    rng = np.random.default_rng(options.seed)
    real = data.head(options.samples).inputs
    ranges = data_range(data)
    floats = [k for k, v in real.items() if np.issubdtype(v.dtype, np.floating)]

    def filled(fn) -> dict[str, np.ndarray]:
        return {k: fn(k, v, *ranges[k]).astype(v.dtype) for k, v in real.items()}

    def noise(k: str, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
        if np.issubdtype(v.dtype, np.integer):
            return rng.integers(int(lo), int(hi) + 1, size=v.shape)
        return rng.uniform(lo, hi, size=v.shape)

    def only_floats(fn):
        return lambda k, v, lo, hi: fn(k, v, lo, hi) if k in floats else v

    def poke(values: list[float], fraction: float):
        def fn(k: str, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
            x = v.astype(np.float64)
            mask = rng.random(v.shape) < fraction
            x[mask] = rng.choice(values, size=int(mask.sum()))
            x[0] = values[0]  # one sample entirely non-finite
            return x
        return fn

    far = options.far_factor
    cases = [
        Case("black", filled(lambda k, v, lo, hi: np.full(v.shape, lo)), "every input at the data minimum"),
        Case("white", filled(lambda k, v, lo, hi: np.full(v.shape, hi)), "every input at the data maximum"),
        Case("mid-grey", filled(lambda k, v, lo, hi: np.full(v.shape, (lo + hi) / 2)), "the middle of the range"),
        Case("uniform-noise", filled(noise), "uniform noise over the data range", varied=True),
    ]
    if floats:
        def beyond(k: str, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
            return far * max(abs(lo), abs(hi), 1e-6) * rng.choice([-1.0, 1.0], size=v.shape)

        cases += [
            Case("far-outside", filled(only_floats(beyond)), f"+/-{far:g}x the largest magnitude in the data",
                 varied=True),
            Case("nan-input", filled(only_floats(poke([np.nan], 0.1))), "NaN in 10% of values, sample 0 all NaN",
                 nonfinite=True),
            Case("inf-input", filled(only_floats(poke([np.inf, -np.inf], 0.1))),
                 "+/-inf in 10% of values, sample 0 all inf", nonfinite=True),
        ]
    return cases + _aspect_cases(data, float_model, real, ranges, floats, rng)


def _aspect_cases(data: DataSet, float_model: onnx.ModelProto, real: dict[str, np.ndarray],
                  ranges: dict[str, tuple[float, float]], floats: list[str], rng: np.random.Generator) -> list[Case]:
    """Image inputs at an odd size and aspect, where the model takes any size."""
    cases = []
    for k in floats:
        if data.batch_axis(k) != 0 or k in data.row_feeds:
            continue  # rows are not (N, C, H, W) images
        axes = _spatial_axes(float_model, k)
        if axes is None:
            continue
        shape = list(real[k].shape)
        h, w = shape[axes[0]], shape[axes[1]]
        # odd and not a multiple of 32: the sizes that break fixed tiling and stride assumptions
        shape[axes[0]], shape[axes[1]] = max(int(h * 0.75) | 1, 5), max(int(w * 1.4) | 1, 7)
        feeds = dict(real)
        feeds[k] = rng.uniform(*ranges[k], size=shape).astype(real[k].dtype)
        cases.append(Case(f"aspect-{shape[axes[0]]}x{shape[axes[1]]}", feeds,
                          f"input {k!r} at H={shape[axes[0]]}, W={shape[axes[1]]} (the model takes any size)",
                          varied=True, spatial=True))
    return cases


def crash_test(artifact: Path, backend: str, float_model: bytes, data: DataSet,
               options: CrashTestOptions | None = None, runner_factory: str | None = None) -> list[dict[str, Any]]:
    """Run every case on ``artifact`` (and float) in child processes; one result row per case.

    ``runner_factory`` (``package.module:function``, called with the artifact path) replaces the
    backend's runner: a hook for runtimes irq does not know, and for tests.
    """
    options = options or CrashTestOptions()
    cases = build_cases(data, onnx.load_from_string(float_model), options)
    with tempfile.TemporaryDirectory(prefix="irq-crashtest-") as tmp:
        work = Path(tmp)
        (work / "float.onnx").write_bytes(float_model)
        np.savez(work / "cases.npz", **{f"{i}/{k}": v for i, c in enumerate(cases) for k, v in c.feeds.items()})
        spec = {"artifact": str(artifact), "backend": backend, "factory": runner_factory,
                "batch_axes": data.batch_axes, "row_feeds": sorted(data.row_feeds),
                "cases": [{"name": c.name, "inputs": list(c.feeds)} for c in cases]}
        (work / "spec.json").write_text(json.dumps(spec))
        events = _run_children(work, len(cases), options.timeout_s)
        limits = json.loads((work / "limits.json").read_text()) if (work / "limits.json").exists() else None
        outs = [(_load(work, f"art{i}.npz"), _load(work, f"flt{i}.npz")) for i in range(len(cases))]
    results = [_judge(c, events.get(i, {}), *outs[i], limits) for i, c in enumerate(cases)]
    _same_for_black_and_white(cases, outs, results)
    return results


def _run_children(work: Path, count: int, timeout_s: float) -> dict[int, dict[str, str]]:
    """Run the cases in child processes, starting a fresh child after a case that killed one."""
    events: dict[int, dict[str, str]] = {}
    start = 0
    while start < count:
        cmd = [sys.executable, "-m", "irq.verify.crashtest_child", str(work), str(start)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            stdout, died = proc.stdout, "" if proc.returncode == 0 else _death(proc.returncode, proc.stderr)
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            died = f"hung: killed after {timeout_s:.0f} s"
        for line in stdout.splitlines():
            if line.startswith("irq-crashtest "):
                _, stage, index, *rest = line.split(" ", 3)
                events.setdefault(int(index), {})[stage] = rest[0] if rest else ""
        if "setup" in events.get(start, {}):
            for j in range(start + 1, count):
                events.setdefault(j, {})["setup"] = events[start]["setup"]
            break
        open_cases = [i for i in range(start, count) if "start" in events.get(i, {}) and "done" not in events[i]]
        if not open_cases:
            if all("done" in events.get(i, {}) for i in range(start, count)):
                break
            for j in range(start, count):  # the child failed before running any case
                events.setdefault(j, {})["died"] = died or "the child process stopped early"
            break
        events[open_cases[0]]["died"] = died or "the child process stopped early"
        start = open_cases[0] + 1
    return events


def _death(code: int, stderr: str) -> str:
    if code < 0:
        try:
            return f"the process died ({signal.Signals(-code).name})"
        except ValueError:
            return f"the process died (signal {-code})"
    tail = [ln for ln in (stderr or "").splitlines() if ln.strip()][-1:]
    return f"the process exited with code {code}" + (f": {tail[0][:200]}" if tail else "")


def _load(work: Path, name: str) -> list[np.ndarray] | None:
    path = work / name
    if not path.exists():
        return None
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _stats(outs: list[np.ndarray]) -> dict[str, Any]:
    values = np.concatenate([np.asarray(o, dtype=np.float64).ravel() for o in outs])
    rows = [np.asarray(o).reshape(len(o), -1) for o in outs]
    constant = all(len(r) > 1 and np.array_equal(r, np.broadcast_to(r[:1], r.shape), equal_nan=True) for r in rows)
    return {"nan": int(np.isnan(values).sum()), "inf": int(np.isinf(values).sum()), "size": int(values.size),
            "constant": constant}


def _judge(case: Case, ev: dict[str, str], art: list[np.ndarray] | None, flt: list[np.ndarray] | None,
           limits: list | None) -> dict[str, Any]:
    """The result row of one case, from what the child reported and saved."""
    row: dict[str, Any] = {"case": case.name, "input": case.description, "passed": False}
    if "setup" in ev:
        return {**row, "outcome": "error", "detail": f"the runner could not be built: {ev['setup']}"}
    if art is None:
        if "artifact" not in ev:
            return {**row, "outcome": "crash", "detail": ev.get("died", "no result")}
        if case.spatial and ev.get("shape") == "fixed":
            return {**row, "passed": True, "outcome": "skipped",
                    "detail": f"the artifact takes one fixed input size and refused this one ({ev['artifact']})"}
        if flt is None and ev.get("float"):
            return {**row, "passed": True, "outcome": "skipped",
                    "detail": f"not applicable: the float model rejects this input too ({ev['float']})"}
        graceful = case.nonfinite
        return {**row, "passed": graceful, "outcome": "error", "detail": f"the runtime raised: {ev['artifact']}"
                + (" (a clean refusal of non-finite input)" if graceful else "")}
    a = _stats(art)
    f = _stats(flt) if flt is not None else None
    ref = f"float: {ev.get('died', 'failed')}" if f is None else \
        f"float: {f['nan']} NaN, {f['inf']} inf" + (", also constant" if f["constant"] and case.varied else "")
    nonfinite = f"{a['nan']} NaN and {a['inf']} inf in {a['size']} output values ({ref})" \
        if a["nan"] or a["inf"] else ""
    constant = f"all {len(art[0])} different samples give one output ({ref})" if case.varied and a["constant"] else ""
    pinned = _pinned(art, limits, flt)
    if case.nonfinite and nonfinite and not (constant or pinned):
        return {**row, "passed": True, "outcome": "nonfinite-output", "detail": "accepted for NaN/inf input: "
                + nonfinite}
    problems = [p for p in (nonfinite, constant, pinned) if p]
    if not problems:
        hides = case.nonfinite and f is not None and (f["nan"] or f["inf"])
        return {**row, "passed": True, "outcome": "ok", "detail": f"ran; {a['size']} finite output values"
                + (f" while float gives non-finite ones ({ref}): the artifact hides bad input" if hides else "")}
    return {**row, "outcome": "failed", "detail": "; ".join(problems)}


def _pinned(outs: list[np.ndarray], limits: list | None, flt: list[np.ndarray] | None = None) -> str:
    """Which integer-typed output sits at its qmin/qmax in (nearly) every value while float's does not.

    A text detector shown a blank page answers 0 everywhere, in float too: that is its answer,
    not a saturated quantizer.
    """
    for i, (o, lim) in enumerate(zip(outs, limits or [], strict=False)):
        if lim is None or not np.size(o):
            continue
        share = float(np.mean(np.isclose(o, lim[0]) | np.isclose(o, lim[1])))
        if share < 0.99:
            continue
        if flt is not None and i < len(flt) and np.size(flt[i]):
            step = (lim[1] - lim[0]) / 255.0
            f = np.asarray(flt[i], np.float64)
            float_share = float(np.mean((np.abs(f - lim[0]) <= step) | (np.abs(f - lim[1]) <= step)))
            if float_share >= 0.99:
                continue
        return f"int8 output {i} stuck at qmin/qmax in {100 * share:.0f}% of values"
    return ""


def _same_for_black_and_white(cases: list[Case], outs: list, results: list[dict[str, Any]]) -> None:
    """An artifact that answers all-black and all-white identically ignores its input."""
    names = [c.name for c in cases]
    if "black" not in names or "white" not in names:
        return
    (ab, fb), (aw, fw) = outs[names.index("black")], outs[names.index("white")]
    if ab is None or aw is None or not all(np.array_equal(x, y, equal_nan=True) for x, y in zip(ab, aw, strict=True)):
        return
    float_too = fb is not None and fw is not None and all(np.array_equal(x, y) for x, y in zip(fb, fw, strict=True))
    row = results[names.index("white")]
    row.update(passed=False, outcome="failed", detail=row["detail"] + "; the same output as all-black"
               + (" (float's is the same too)" if float_too else " (float's differs)"))
