"""``irq sensitivity`` and the budget flags of ``irq compile``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from irq.sensitivity.metrics import BUILTIN

_METRIC_HELP = f"{', '.join(BUILTIN)} or package.module:function (called with float outputs, artifact outputs, labels)"


def _add_search_tuning(p: argparse.ArgumentParser | Any) -> None:
    p.add_argument("--keep", default="auto", choices=["auto", "fp32", "fp16", "int16"],
                   help="precision of layers left out of int8 (auto: fp16 on Core ML; on static ONNX targets "
                   "int16 first, then fp32; else fp32)")
    p.add_argument("--subset", type=int, default=16, help="samples for the first scoring round (0: all)")
    p.add_argument("--confirm", type=int, default=4, help="top layers re-scored on more of the evaluation set")
    p.add_argument("--confirm-samples", type=int, default=128,
                   help="evaluation samples (evenly spread) the top layers are re-scored on (0: all)")
    p.add_argument("--workers", type=int, default=2, help="parallel worker processes (1 thread each)")


def add_budget_arguments(c: argparse.ArgumentParser) -> None:
    """The mixed-precision flags of ``irq compile`` (any one of the first three turns the search on)."""
    g = c.add_argument_group("mixed precision under an accuracy budget (needs --eval)")
    g.add_argument("--budget", type=float, help="maximum top-1 drop vs float, in points (needs labels)")
    g.add_argument("--min-agreement", type=float, help="minimum top-1 agreement with float (0-1)")
    g.add_argument("--min-metric", type=float, help="minimum value of --metric")
    g.add_argument("--metric", help=f"metric for --min-metric: {_METRIC_HELP}")
    g.add_argument("--max-evals", type=int, default=20, help="most artifacts the search lowers and measures")
    _add_search_tuning(g)


def _search_options(args: argparse.Namespace, metric: str):
    from irq.sensitivity.analysis import SensitivityOptions
    from irq.sensitivity.mixed import SearchOptions

    sens = SensitivityOptions(metric, args.subset, args.confirm, args.workers, args.keep,
                              confirm_samples=args.confirm_samples)
    return SearchOptions(sens, max_evals=getattr(args, "max_evals", 20))


def criterion_and_search(args: argparse.Namespace) -> tuple[Any, Any]:
    """The budget and search options ``irq compile``'s flags ask for (None, None without a budget flag)."""
    from irq.sensitivity.metrics import Criterion

    criterion = Criterion.from_flags(args.budget, args.min_agreement, args.min_metric, args.metric)
    if criterion is None:
        return None, None
    return criterion, _search_options(args, criterion.metric)


def _sensitivity(args: argparse.Namespace) -> int:
    from irq.cli.options import load_data_arg
    from irq.data.conform import conform
    from irq.frontends import import_model
    from irq.pipeline.recipe import load_recipe
    from irq.pipeline.targets import get_target
    from irq.sensitivity.analysis import analyze_sensitivity
    from irq.sensitivity.outputs import write_sensitivity

    target = get_target(args.target)
    model = import_model(args.model)
    calib = load_data_arg(args.calib, args)
    data = conform(load_data_arg(args.eval, args), model.graph, "evaluation")
    calib = None if calib is None else conform(calib, model.graph, "calibration")
    recipe = load_recipe(args.recipe) if args.recipe else None
    result = analyze_sensitivity(model, target, calib, data, _search_options(args, args.metric).sensitivity,
                                 recipe, args.pipeline)
    paths = write_sensitivity(Path(args.out), result)
    t = result.timings
    print(f"{result.model} on {result.target}: {len(result.rows)} layers scored both ways on "
          f"{result.samples['subset']} samples, top {sum(r['confirmed'] for r in result.rows)} confirmed on "
          f"{result.samples['full']}; {t['total_s']:.1f} s ({t['scoring_s'] / max(t['calibration_s'], 1e-9):.1f}x "
          f"the {t['calibration_s']:.1f} s calibration)")
    for row in result.rows[:10]:
        gain = row.get("gain_full", row["gain"])[args.metric]
        print(f"{row['rank']:3d}. {row['layer']:50} {row['op_type']:10} gain if kept {args.metric}: {gain:+.4g}")
    print(f"wrote {paths['json']}, {paths['csv'].name}, {paths['png'].name}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> dict[str, Any]:
    """Add ``irq sensitivity``; returns its handler by name."""
    from irq.cli.options import add_data_options

    p = sub.add_parser("sensitivity", help="per-layer quantization sensitivity (one calibration, both ways)")
    p.add_argument("model", help="ONNX file, zoo name or package.module:function")
    p.add_argument("--target", "-t", default="onnx-int8", help="target whose quantization is scored")
    p.add_argument("--calib", help=".npz or image folder")
    p.add_argument("--eval", required=True, help=".npz or image folder (labels needed for top1)")
    p.add_argument("--metric", default="sqnr", help=f"ranking metric: {_METRIC_HELP}")
    p.add_argument("--recipe", help="YAML recipe applied before scoring")
    p.add_argument("--pipeline", help="override the target's pass pipeline string")
    _add_search_tuning(p)
    p.add_argument("-o", "--out", required=True, help="output folder")
    add_data_options(p)
    return {"sensitivity": _sensitivity}
