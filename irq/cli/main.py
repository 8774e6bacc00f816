"""The parser for every subcommand, and the one place where errors become messages and exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from irq.cli.commands import COMMANDS
from irq.cli.options import add_check_options, add_data_options, add_io_options
from irq.errors import BudgetError, IrqError

#: Modules that add subcommands: each has ``register(subparsers) -> {name: handler}``.
SUBCOMMAND_MODULES = ("irq.sensitivity.cli", "irq.batch.cli", "irq.qat.cli")


def _subcommand_modules() -> list[Any]:
    import importlib

    found = []
    for name in SUBCOMMAND_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise
    return found


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    p = argparse.ArgumentParser(prog="irq", description="ONNX-centric quantization compiler")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("audit", help="op census, sizes, quantizable layers, hazards")
    a.add_argument("model")
    a.add_argument("--json", action="store_true")

    c = sub.add_parser("compile", help="quantize and lower a model for a target")
    c.add_argument("model", help="ONNX file, zoo name or package.module:function")
    c.add_argument("--target", "-t", required=True)
    c.add_argument("--calib", help=".npz or image folder")
    c.add_argument("--eval", help=".npz or image folder (labels optional)")
    c.add_argument("--recipe", help="YAML recipe with per-layer overrides")
    c.add_argument("--pipeline", help="override the target's pass pipeline string")
    c.add_argument("--preset", choices=["fast", "accurate", "max"], help="fast: the target's pipeline (default); "
                   "accurate: + cross-layer equalization and weight-scale search; max: + AdaRound (minutes)")
    c.add_argument("--weights", choices=["int8", "int4"], help="weight type of the quantized layers (int4: W4A8 on "
                   "onnx-int8/-arm, coreml-w8a8; int4 weight-only on coreml-int8)")
    c.add_argument("--disable-pass", action="append", default=[], help="skip a pass by name")
    c.add_argument("--dump-ir", help="write the IR after each pass into this folder")
    c.add_argument("--verify-each", action="store_true",
                   help="after every pass run onnx's checker, irq's IR invariants and the pass's own checks")
    c.add_argument("--io", choices=["int8", "float"], help="TFLite int8: input/output type")
    c.add_argument("--deployment-target", help="Core ML: iOS16, iOS17, iOS18, macOS13...")
    c.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    c.add_argument("-o", "--out", required=True, help="output folder")
    add_data_options(c)
    add_io_options(c)
    from irq.sensitivity.cli import add_budget_arguments

    add_budget_arguments(c)  # --budget, --min-agreement, --min-metric: mixed precision
    add_check_options(c, skip=("min_agreement",))  # --min-agreement above doubles as a budget

    v = sub.add_parser("verify", help="re-measure an artifact against its float model")
    v.add_argument("model")
    v.add_argument("artifact")
    v.add_argument("--eval", required=True)
    v.add_argument("-o", "--out", help="write the report JSON here")
    v.add_argument("--no-latency", action="store_true")
    add_data_options(v)
    add_io_options(v, shapes=False)
    add_check_options(v)

    b = sub.add_parser("bench", help="time artifacts against the float model and each other, interleaved")
    b.add_argument("model", help="the float model the artifacts came from")
    b.add_argument("artifacts", nargs="+", help=".onnx or .tflite artifacts (the first is the reference for 'x first')")
    b.add_argument("--data", help=".npz or image folder whose first sample is fed (default: a seeded normal sample)")
    b.add_argument("--runs", type=int, default=60, help="timed single-sample runs per artifact")
    b.add_argument("--warmup", type=int, default=5, help="untimed runs before each block")
    b.add_argument("--rounds", type=int, default=3, help="blocks the timed runs are split into, taking turns")
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    add_data_options(b)

    for module in _subcommand_modules():
        COMMANDS.update(module.register(sub))
    sub.add_parser("demo", help="the zoo's fashion-cnn through every available target")
    sub.add_parser("targets", help="list targets")
    sub.add_parser("passes", help="list passes (built-in and plugins)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand, turning irq errors into one line and an exit code."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return COMMANDS[args.command](args)
    except BudgetError as e:
        print(f"irq: budget missed: {e}", file=sys.stderr)
        return e.exit_code
    except IrqError as e:
        if args.debug:
            traceback.print_exc()
        lines = str(e).splitlines() or [""]
        more = "" if args.debug or len(lines) == 1 else " (rerun with --debug for the converter's output)"
        print(f"irq: error: {lines[0]}{more}", file=sys.stderr)
        if args.debug and len(lines) > 1:
            print("\n".join(lines[1:]), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("irq: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        print(f"irq: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(rerun with --debug for a traceback)", file=sys.stderr)
        return 1
