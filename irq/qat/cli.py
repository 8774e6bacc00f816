"""``irq qat MODEL --train DATA --eval DATA [--target T] ... -o OUTDIR``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

#: CLI names of QATOptions fields with their argparse settings.
_OPTIONS = {
    "epochs": (int, "passes over the training data (default 1)"),
    "lr": (float, "weight learning rate (AdamW, cosine decay; default 1e-4)"),
    "range_lr": (float, "activation-range learning rate with --learn-ranges (default 1e-3)"),
    "batch_size": (int, "training batch size (default 128)"),
    "weight_decay": (float, "AdamW weight decay (default 0)"),
    "max_steps": (int, "stop after this many steps (0: no limit)"),
    "seed": (int, "shuffling and initialisation seed"),
    "device": (str, "torch device: auto (CUDA when available), cpu, cuda..."),
}


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the ``qat`` subcommand; return its handler."""
    p = sub.add_parser("qat", help="quantization-aware training, exported as the target's artifact")
    p.add_argument("model", help="ONNX file, zoo name or package.module:function")
    p.add_argument("--train", required=True, help="labelled training data (.npz with 'y', or image folder)")
    p.add_argument("--eval", help="labelled evaluation data: float, PTQ and QAT are measured on it")
    p.add_argument("--calib", help="calibration data for the initial ranges (default: first 500 training samples)")
    p.add_argument("--target", "-t", default="onnx-int8")
    p.add_argument("--recipe", help="YAML recipe: layer precisions and granularity (float layers train in float)")
    p.add_argument("--weights", choices=["int8", "int4"], help="override the target's weight type")
    p.add_argument("--learn-ranges", action="store_true", help="learn activation scales and zero points (LSQ)")
    p.add_argument("--no-baseline", action="store_true", help="skip lowering and measuring the PTQ baseline")
    p.add_argument("--max-drop", type=float, help="fail (exit 3) when QAT top-1 drops more points than this")
    p.add_argument("--latency", action="store_true", help="also measure latency")
    for name, (kind, text) in _OPTIONS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    p.add_argument("-o", "--out", required=True, help="output folder")
    return {"qat": _run}


def _run(args: argparse.Namespace) -> int:
    from irq.data import load_data
    from irq.qat.run import qat_compile
    from irq.qat.train import QATOptions
    from irq.report.text import one_line

    given = {k: getattr(args, k) for k in _OPTIONS if getattr(args, k) is not None}
    try:
        options = QATOptions(learn_ranges=args.learn_ranges, **given)
    except ValueError as e:
        from irq.errors import InputError

        raise InputError(f"qat: {e}") from e
    report = qat_compile(args.model, args.target, args.out, load_data(args.train),
                         eval_data=load_data(args.eval) if args.eval else None,
                         calib=load_data(args.calib) if args.calib else None, recipe=args.recipe,
                         weights=args.weights, options=options, baseline=not args.no_baseline,
                         measure_latency=args.latency, max_drop_pt=args.max_drop)
    q = report["qat"]
    acc = q["accuracy"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    print(one_line(report))
    print(f"qat: {q['epochs']} epoch(s), {q['steps']} steps on {q['device']} in {q['train_seconds']:.0f} s; "
          f"loss {q['loss']['first_step']:.4f} -> {q['loss']['per_epoch'][-1]:.4f}; "
          f"top-1 float {pct(acc['float'])}, PTQ {pct(acc['ptq'])}, QAT {pct(acc['qat'])}")
    return 0
