"""The core subcommands (audit, compile, verify, bench, demo, targets, passes) and how outcomes are printed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from irq.cli.options import batch_axes, check_options, input_shapes, input_values, load_data_arg
from irq.errors import BudgetError

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    """Register a subcommand handler."""
    def wrap(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn
    return wrap


def _print_outcome(report: dict[str, Any]) -> None:
    from irq.report.text import one_line

    print(one_line(report))
    for w in report.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    for b in report.get("budgets", {}).get("checks", []):
        print(f"budget {b['budget']}: {'pass' if b['passed'] else 'FAIL'} ({b['detail']})", file=sys.stderr)


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
    from irq.compiler import compile as compile_model
    from irq.sensitivity.cli import criterion_and_search
    from irq.verify.gates import Budgets

    options = {k: v for k, v in (("io", args.io), ("deployment_target", args.deployment_target)) if v}
    criterion, search = criterion_and_search(args)
    try:
        report = compile_model(args.model, args.target, args.out, calib=load_data_arg(args.calib, args),
                               eval=load_data_arg(args.eval, args), recipe=args.recipe, pipeline=args.pipeline,
                               dump_ir=args.dump_ir, disable_passes=args.disable_pass, options=options,
                               measure_latency=not args.no_latency, budgets=Budgets.from_args(args),
                               checks=check_options(args), input_shapes=input_shapes(args),
                               input_values=input_values(args), batch_axes=batch_axes(args), output=args.output,
                               criterion=criterion, search=search, verify_each=args.verify_each,
                               preset=args.preset, weights=args.weights)
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
    from irq.verify.gates import Budgets

    budgets = Budgets.from_args(args)
    try:
        report = verify(args.model, args.artifact, load_data_arg(args.eval, args), out=args.out,
                        measure_latency=not args.no_latency, budgets=budgets, checks=check_options(args),
                        batch_axes=batch_axes(args), output=args.output)
    except BudgetError:
        if args.out:
            _print_saved(args.out)
        raise
    _print_outcome(report)
    return 0


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    from irq.api import bench
    from irq.verify.bench import table

    if min(args.runs, args.rounds) < 1 or args.warmup < 0:
        from irq.errors import InputError

        raise InputError("--runs and --rounds must be at least 1, --warmup at least 0")
    result = bench(args.model, args.artifacts, load_data_arg(args.data, args), runs=args.runs, warmup=args.warmup,
                   rounds=args.rounds)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from irq.demo import run_demo

    print(run_demo())
    return 0


@command("targets")
def _targets(args: argparse.Namespace) -> int:
    from irq.pipeline.targets import TARGETS

    for t in TARGETS.values():
        print(f"{t.name:16} {t.description}")
    return 0


@command("passes")
def _passes(args: argparse.Namespace) -> int:
    from irq.pipeline.registry import available_passes

    for name, target in sorted(available_passes().items()):
        print(f"{name:18} {target}")
    return 0
