"""The ``irq`` command line. The only place where errors become messages and exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from irq.errors import BudgetError, InputError, IrqError

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    """Register a subcommand handler."""
    def wrap(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn
    return wrap


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("image-folder data")
    g.add_argument("--image-size", type=int, default=256, help="resize short side to this")
    g.add_argument("--crop", type=int, default=224, help="centre crop size")
    g.add_argument("--mean", help="per-channel mean, e.g. 123.7,116.3,103.5")
    g.add_argument("--std", help="per-channel std")
    g.add_argument("--scale", type=float, default=1.0, help="multiply pixels (0..255) by this first")
    g.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"])


def _add_io_options(p: argparse.ArgumentParser, shapes: bool = True) -> None:
    g = p.add_argument_group("model inputs and outputs")
    if shapes:
        g.add_argument("--input-shape", action="append", default=[], metavar="NAME=1,3,320,320",
                       help="fix an input's shape (repeatable); static-shape targets take the rest from the data")
        g.add_argument("--input-value", action="append", default=[], metavar="NAME=16000",
                       help="freeze a scalar input to a constant (repeatable); the artifact no longer takes it")
    g.add_argument("--batch-axis", action="append", default=[], metavar="NAME=K",
                   help="the data's rows go on axis K of input NAME (default 0; repeatable)")
    g.add_argument("--output", help="the output that accuracy, agreement and budgets read (default: the first "
                                    "whose shape fits class scores)")


def _shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]] | None:
    from irq.input_plan import parse_shape_flag

    found = dict(parse_shape_flag(t) for t in getattr(args, "input_shape", []) or [])
    return found or None


def _values(args: argparse.Namespace) -> dict[str, float] | None:
    from irq.input_plan import parse_value_flag

    found = dict(parse_value_flag(t) for t in getattr(args, "input_value", []) or [])
    return found or None


def _batch_axes(args: argparse.Namespace) -> dict[str, int] | None:
    found = {}
    for text in getattr(args, "batch_axis", []) or []:
        name, eq, axis = text.rpartition("=")
        if not eq or not name or not axis.lstrip("-").isdigit():
            raise InputError(f"--batch-axis {text!r}: expected NAME=K")
        found[name] = int(axis)
    return found or None


def _add_check_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    from irq.budgets import add_budget_flags

    p.add_argument("--no-crash-test", action="store_true", help="skip the extreme-input crash test")
    p.add_argument("--no-layer-error", action="store_true", help="skip per-layer SQNR (ONNX artifacts)")
    add_budget_flags(p, skip)


def _checks(args: argparse.Namespace):
    from irq.verify_report import VerifyOptions

    return VerifyOptions(measure_latency=not args.no_latency, crash_test=not args.no_crash_test,
                         layer_error=not args.no_layer_error)


def _print_outcome(report: dict[str, Any]) -> None:
    from irq.summary import one_line

    print(one_line(report))
    for w in report.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    for b in report.get("budgets", {}).get("checks", []):
        print(f"budget {b['budget']}: {'pass' if b['passed'] else 'FAIL'} ({b['detail']})", file=sys.stderr)


def _image_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"size": args.image_size, "crop": args.crop, "mean": args.mean, "std": args.std,
            "scale": args.scale, "layout": args.layout}


def _load(spec: str | None, args: argparse.Namespace):
    from irq.data import load_data

    return None if spec is None else load_data(spec, **_image_options(args))


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
    c.add_argument("--disable-pass", action="append", default=[], help="skip a pass by name")
    c.add_argument("--dump-ir", help="write the IR after each pass into this folder")
    c.add_argument("--io", choices=["int8", "float"], help="TFLite int8: input/output type")
    c.add_argument("--deployment-target", help="Core ML: iOS16, iOS17, iOS18, macOS13...")
    c.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    c.add_argument("-o", "--out", required=True, help="output folder")
    _add_data_options(c)
    _add_io_options(c)
    from irq.sensitivity.cli import add_budget_arguments

    add_budget_arguments(c)  # --budget, --min-agreement, --min-metric: mixed precision
    _add_check_options(c, skip=("min_agreement",))  # --min-agreement above doubles as a budget

    v = sub.add_parser("verify", help="re-measure an artifact against its float model")
    v.add_argument("model")
    v.add_argument("artifact")
    v.add_argument("--eval", required=True)
    v.add_argument("-o", "--out", help="write the report JSON here")
    v.add_argument("--no-latency", action="store_true")
    _add_data_options(v)
    _add_io_options(v, shapes=False)
    _add_check_options(v)

    for module in _subcommand_modules():
        _COMMANDS.update(module.register(sub))
    sub.add_parser("demo", help="the zoo's fashion-cnn through every available target")
    sub.add_parser("targets", help="list targets")
    sub.add_parser("passes", help="list passes (built-in and plugins)")
    return p


@command("audit")
def _audit(args: argparse.Namespace) -> int:
    from irq.api import audit

    report = audit(args.model)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.model}: {report['nodes']} nodes, {report['parameters']:,} parameters "
          f"({report['parameter_bytes'] / 1e6:.2f} MB), opsets {report['opsets']}")
    print("ops: " + ", ".join(f"{k} {v}" for k, v in report["op_census"].items()))
    print(f"quantizable layers: {len(report['quantizable_layers'])}; first: {report['first_layers']}; "
          f"last: {report['last_layers']}")
    for h in report["hazards"]:
        print(f"hazard [{h['kind']}] {h['node']}: {h['detail']}")
    return 0


@command("compile")
def _compile(args: argparse.Namespace) -> int:
    from irq.budgets import Budgets
    from irq.compiler import compile as compile_model
    from irq.sensitivity.cli import criterion_and_search

    options = {k: v for k, v in (("io", args.io), ("deployment_target", args.deployment_target)) if v}
    criterion, search = criterion_and_search(args)
    try:
        report = compile_model(args.model, args.target, args.out, calib=_load(args.calib, args),
                               eval=_load(args.eval, args), recipe=args.recipe, pipeline=args.pipeline,
                               dump_ir=args.dump_ir, disable_passes=args.disable_pass, options=options,
                               measure_latency=not args.no_latency, budgets=Budgets.from_args(args),
                               checks=_checks(args), input_shapes=_shapes(args), input_values=_values(args),
                               batch_axes=_batch_axes(args), output=args.output, criterion=criterion, search=search)
    except BudgetError:
        _print_saved(os.path.join(args.out, "report.json"))
        raise
    _print_outcome(report)
    return 0


def _print_saved(path: str) -> None:
    """The outcome lines of a report a missed budget interrupted (it was written first)."""
    if os.path.exists(path):
        with open(path) as f:
            _print_outcome(json.load(f))


@command("verify")
def _verify(args: argparse.Namespace) -> int:
    from irq.api import verify
    from irq.budgets import Budgets

    budgets = Budgets.from_args(args)
    try:
        report = verify(args.model, args.artifact, _load(args.eval, args), out=args.out,
                        measure_latency=not args.no_latency, budgets=budgets, checks=_checks(args),
                        batch_axes=_batch_axes(args), output=args.output)
    except BudgetError:
        if args.out:
            _print_saved(args.out)
        raise
    _print_outcome(report)
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from irq.demo import run_demo

    print(run_demo())
    return 0


@command("targets")
def _targets(args: argparse.Namespace) -> int:
    from irq.targets import TARGETS

    for t in TARGETS.values():
        print(f"{t.name:16} {t.description}")
    return 0


@command("passes")
def _passes(args: argparse.Namespace) -> int:
    from irq.registry import available_passes

    for name, target in sorted(available_passes().items()):
        print(f"{name:18} {target}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand, turning irq errors into one line and an exit code."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return _COMMANDS[args.command](args)
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


if __name__ == "__main__":
    sys.exit(main())

