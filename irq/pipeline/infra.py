"""Pass infrastructure: passes, results, composition, instruments and the pass manager.

A pass is a frozen dataclass (its fields are its options) with one entry point, ``run``, that
takes a QModel and returns a PassResult saying whether anything changed. Its contract is
checked on the IR, not on pass names: ``requires(qmodel)`` lists what is missing before it can
run (the manager refuses to run it), ``ensures(qmodel)`` what it failed to establish (checked
under ``--verify-each``). A PassManager is itself a pass, so pipelines nest and a ``fixpoint``
group repeats only its own passes. Instruments (timing, IR dumps, disabling by name, the
verifier) live here, not in the passes.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from irq.errors import IrqError, PassError
from irq.ir.model import QModel


@dataclass
class PassResult:
    """What a pass returns: the (possibly new) model and whether it was modified."""

    model: QModel
    modified: bool


@dataclass(frozen=True)
class Pass(abc.ABC):
    """Base class of every pass. Subclasses set ``name`` and implement ``run``."""

    name: ClassVar[str] = "?"
    #: False for passes that only annotate (analysis, calibration, the plan): they never make
    #: the precision plan stale.
    rewrites_graph: ClassVar[bool] = True
    #: True for passes that carry out the plan (insert-qdq, ...): their rewrites keep it valid.
    keeps_plan: ClassVar[bool] = False
    #: True for the pass that reads ``qmodel.calibration`` (calibrate): what a cache may stand in for.
    reads_calibration_data: ClassVar[bool] = False

    @abc.abstractmethod
    def run(self, qmodel: QModel) -> PassResult:
        """Transform or annotate ``qmodel``."""

    def requires(self, qmodel: QModel) -> list[str]:
        """What ``qmodel`` lacks for this pass to run, one sentence each (empty: it can run)."""
        return []

    def ensures(self, qmodel: QModel) -> list[str]:
        """What this pass should have established in ``qmodel`` and did not (empty: all holds)."""
        return []

    def spec(self) -> str:
        """This pass as a pipeline-string element, options included when not default."""
        from irq.pipeline.grammar import format_value

        opts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            if f.default_factory is not dataclasses.MISSING and value == f.default_factory():
                continue
            opts.append(f"{f.name.replace('_', '-')}={format_value(value)}")
        return self.name + (f"{{{','.join(opts)}}}" if opts else "")


class Instrument:
    """Hooks called around every pass; subclasses override what they need."""

    def should_run(self, pass_: Pass, qmodel: QModel) -> bool:
        """Return False to skip ``pass_``."""
        return True

    def before(self, pass_: Pass, qmodel: QModel) -> None:
        """Called before ``pass_`` runs."""

    def after(self, pass_: Pass, result: PassResult, index: int) -> None:
        """Called after ``pass_`` ran (``index`` counts the passes run so far, from 1)."""


@dataclass
class TimingInstrument(Instrument):
    """Records wall time per pass, in run order."""

    timings: list[tuple[str, float]] = field(default_factory=list)
    _start: float = 0.0

    def before(self, pass_: Pass, qmodel: QModel) -> None:
        """Start the clock."""
        self._start = time.perf_counter()

    def after(self, pass_: Pass, result: PassResult, index: int) -> None:
        """Stop the clock."""
        self.timings.append((pass_.name, time.perf_counter() - self._start))


@dataclass
class DumpIRInstrument(Instrument):
    """Writes the graph after each pass as ``NNN_pass-name.onnx`` in a folder.

    NNN counts every pass the instrument saw: one compile runs several pass managers (input
    preparation, then the pipeline), whose own indices both start at 1.
    """

    directory: Path
    written: int = 0

    def after(self, pass_: Pass, result: PassResult, index: int) -> None:
        """Save the model as it stands after ``pass_``."""
        self.written += 1
        result.model.save(Path(self.directory) / f"{self.written:03d}_{pass_.name}.onnx")


@dataclass
class DisablePassesInstrument(Instrument):
    """Skips passes by name."""

    disabled: frozenset[str]

    def should_run(self, pass_: Pass, qmodel: QModel) -> bool:
        """Run only passes not named in ``disabled``."""
        return pass_.name not in self.disabled


@dataclass(frozen=True)
class PassManager(Pass):
    """Runs a sequence of passes with instruments; ``fixpoint`` repeats them until nothing changes.

    A PassManager is a pass: nested in another, it runs with the outer manager's instruments
    too, and ``spec()`` writes it as ``pipeline(...)`` or ``fixpoint(...)``.
    """

    name: ClassVar[str] = "pipeline"
    passes: Sequence[Pass] = ()
    instruments: Sequence[Instrument] = ()
    fixpoint: bool = False
    max_iterations: int = 10

    def __call__(self, qmodel: QModel) -> PassResult:
        """Run the pipeline; PassError names the failing pass and the passes before it."""
        return self.run(qmodel)

    def run(self, qmodel: QModel) -> PassResult:
        """Run every pass (repeatedly, for a fixpoint) and say whether any changed the model."""
        return self._execute(qmodel, tuple(self.instruments), [0])

    def spec(self) -> str:
        """``fixpoint(a,b)`` or ``pipeline(a,b)``."""
        return ("fixpoint" if self.fixpoint else "pipeline") + "(" + ",".join(p.spec() for p in self.passes) + ")"

    def _execute(self, qmodel: QModel, instruments: tuple[Instrument, ...], count: list[int]) -> PassResult:
        modified_any = False
        for _ in range(self.max_iterations if self.fixpoint else 1):
            modified = False
            for p in self.passes:
                if isinstance(p, PassManager):
                    result = p._execute(qmodel, instruments + tuple(p.instruments), count)
                else:
                    result = _run_one(p, qmodel, instruments, count)
                qmodel = result.model
                modified |= result.modified
            modified_any |= modified
            if not modified:
                break
        return PassResult(qmodel, modified_any)


def _run_one(p: Pass, qmodel: QModel, instruments: tuple[Instrument, ...], count: list[int]) -> PassResult:
    if not all(i.should_run(p, qmodel) for i in instruments):
        return PassResult(qmodel, False)
    missing = p.requires(qmodel)
    if missing:
        raise PassError(f"pass {p.name!r} cannot run on model {qmodel.name!r}: {'; '.join(missing)} "
                        f"(ran so far: {', '.join(qmodel.history) or 'nothing'})")
    for i in instruments:
        i.before(p, qmodel)
    result = _run_pass(p, qmodel)
    qmodel = result.model
    qmodel.history.append(p.name)
    if result.modified and p.rewrites_graph and not p.keeps_plan and qmodel.plan and not qmodel.stale_plan:
        qmodel.stale_plan = p.name
    count[0] += 1
    for i in instruments:
        i.after(p, result, count[0])
    return result


def _run_pass(p: Pass, qmodel: QModel) -> PassResult:
    try:
        result = p.run(qmodel)
    except IrqError:
        raise
    except Exception as e:
        ran = ", ".join(qmodel.history) or "nothing"
        raise PassError(f"pass {p.spec()!r} failed on model {qmodel.name!r}: "
                        f"{type(e).__name__}: {e} (passes run before: {ran})") from e
    if not isinstance(result, PassResult):
        raise PassError(f"pass {p.name!r} returned {type(result).__name__}, not PassResult")
    return result
