"""The irq exception hierarchy.

The library raises these and never exits or prints; only the CLI turns them into a one-line
message and an exit code. Each message names the file, node or tensor at fault.
"""

from __future__ import annotations


class IrqError(Exception):
    """Base class of every error irq raises on purpose."""

    exit_code = 2


class InputError(IrqError):
    """A model, data set or option given by the user cannot be used."""


class ModelImportError(IrqError):
    """A frontend could not turn the source model into the IR."""


class DataError(IrqError):
    """Calibration or evaluation data is missing, malformed or does not fit the model."""


class PassError(IrqError):
    """A pass failed; the message names the pass and the passes that ran before it."""


class PipelineError(IrqError):
    """A pipeline string names an unknown pass or option, or a pass is registered twice."""


class LoweringError(IrqError):
    """A backend could not lower the IR to its target format."""


class VerificationError(IrqError):
    """An artifact could not be run or checked in its runtime."""


class BudgetError(IrqError):
    """An accuracy, size or speed budget was missed; the artifact and report were still saved."""

    exit_code = 3
