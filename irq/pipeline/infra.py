"""Pass infrastructure: passes, results, composition, instruments and the pass manager.

A pass is a frozen dataclass (its fields are its options) with one entry point, ``run``, that
takes a QModel and returns a PassResult saying whether anything changed. Composition
(Sequential, Fixpoint) and instruments (timing, IR dumps, disabling by name) live here, not in
the passes.
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
    #: Passes this one needs to have run earlier in the pipeline (checked by the manager).
    requires: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def run(self, qmodel: QModel) -> PassResult:
        """Transform or annotate ``qmodel``."""

    def spec(self) -> str:
        """This pass as a pipeline-string element, options included when not default."""
        opts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            if f.default_factory is not dataclasses.MISSING and value == f.default_factory():
                continue
            if isinstance(value, bool):
                value = str(value).lower()
            opts.append(f"{f.name.replace('_', '-')}={value}")
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
    """Writes the graph after each pass as ``NNN_pass-name.onnx`` in a folder."""

    directory: Path

    def after(self, pass_: Pass, result: PassResult, index: int) -> None:
        """Save the model as it stands after ``pass_``."""
        result.model.save(Path(self.directory) / f"{index:03d}_{pass_.name}.onnx")


@dataclass
class DisablePassesInstrument(Instrument):
    """Skips passes by name."""

    disabled: frozenset[str]

    def should_run(self, pass_: Pass, qmodel: QModel) -> bool:
        """Run only passes not named in ``disabled``."""
        return pass_.name not in self.disabled


@dataclass
class PassManager:
    """Runs a sequence of passes with instruments; ``fixpoint`` repeats until nothing changes."""

    passes: Sequence[Pass]
    instruments: Sequence[Instrument] = ()
    fixpoint: bool = False
    max_iterations: int = 10
    _count: int = 0

    def __call__(self, qmodel: QModel) -> PassResult:
        """Run the pipeline; PassError names the failing pass and the passes before it."""
        modified_any = False
        for _ in range(self.max_iterations if self.fixpoint else 1):
            result = self._run_once(qmodel)
            qmodel = result.model
            modified_any |= result.modified
            if not result.modified:
                break
        return PassResult(qmodel, modified_any)

    def _run_once(self, qmodel: QModel) -> PassResult:
        modified = False
        for p in self.passes:
            if not all(i.should_run(p, qmodel) for i in self.instruments):
                continue
            missing = [r for r in p.requires if r not in qmodel.history]
            if missing:
                raise PassError(f"pass {p.name!r} needs {', '.join(missing)} to run first "
                                f"(ran so far: {', '.join(qmodel.history) or 'nothing'})")
            for i in self.instruments:
                i.before(p, qmodel)
            result = self._run_pass(p, qmodel)
            qmodel = result.model
            qmodel.history.append(p.name)
            modified |= result.modified
            self._count += 1
            for i in self.instruments:
                i.after(p, result, self._count)
        return PassResult(qmodel, modified)

    @staticmethod
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
