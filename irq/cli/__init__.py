"""The ``irq`` command line.

- ``main``: the parser of every subcommand, and the only place errors become one line and an exit code;
- ``commands``: audit, compile, verify, demo, targets, passes;
- ``options``: flags shared by subcommands (data, shapes, frozen inputs, batch axes, checks).
Subcommands of other packages (``irq sensitivity``, ``irq batch``, ``irq qat``) live beside the code
they drive and are found through ``main.SUBCOMMAND_MODULES``.
"""

from irq.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
