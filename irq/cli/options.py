"""Flags shared by subcommands and what they turn into (data, shapes, frozen inputs, checks)."""

from __future__ import annotations

import argparse
from typing import Any

from irq.errors import InputError


def add_data_options(p: argparse.ArgumentParser) -> None:
    """Flags that say how an image folder becomes model inputs."""
    g = p.add_argument_group("image-folder data")
    g.add_argument("--image-size", type=int, default=256, help="resize short side to this")
    g.add_argument("--crop", type=int, default=224, help="centre crop size")
    g.add_argument("--mean", help="per-channel mean, e.g. 123.7,116.3,103.5")
    g.add_argument("--std", help="per-channel std")
    g.add_argument("--scale", type=float, default=1.0, help="multiply pixels (0..255) by this first")
    g.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"])


def add_io_options(p: argparse.ArgumentParser, shapes: bool = True) -> None:
    """Flags for fixed input shapes, frozen inputs, batch axes and the output that is read."""
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


def input_shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]] | None:
    """``--input-shape`` as ``{name: shape}``."""
    from irq.pipeline.input_plan import parse_shape_flag

    found = dict(parse_shape_flag(t) for t in getattr(args, "input_shape", []) or [])
    return found or None


def input_values(args: argparse.Namespace) -> dict[str, float] | None:
    """``--input-value`` as ``{name: value}``."""
    from irq.pipeline.input_plan import parse_value_flag

    found = dict(parse_value_flag(t) for t in getattr(args, "input_value", []) or [])
    return found or None


def batch_axes(args: argparse.Namespace) -> dict[str, int] | None:
    """``--batch-axis`` as ``{name: axis}``."""
    found = {}
    for text in getattr(args, "batch_axis", []) or []:
        name, eq, axis = text.rpartition("=")
        if not eq or not name or not axis.lstrip("-").isdigit():
            raise InputError(f"--batch-axis {text!r}: expected NAME=K")
        found[name] = int(axis)
    return found or None


def add_check_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Flags that turn verification checks off and set CI budgets."""
    from irq.verify.gates import add_budget_flags

    p.add_argument("--no-crash-test", action="store_true", help="skip the extreme-input crash test")
    p.add_argument("--no-layer-error", action="store_true", help="skip per-layer SQNR (ONNX artifacts)")
    add_budget_flags(p, skip)


def check_options(args: argparse.Namespace) -> Any:
    """The VerifyOptions the flags ask for."""
    from irq.verify.checks import VerifyOptions

    return VerifyOptions(measure_latency=not args.no_latency, crash_test=not args.no_crash_test,
                         layer_error=not args.no_layer_error)


def image_options(args: argparse.Namespace) -> dict[str, Any]:
    """Image-folder loading options from the flags."""
    return {"size": args.image_size, "crop": args.crop, "mean": args.mean, "std": args.std,
            "scale": args.scale, "layout": args.layout}


def load_data_arg(spec: str | None, args: argparse.Namespace) -> Any:
    """A ``--calib``/``--eval`` argument loaded (None stays None)."""
    from irq.data import load_data

    return None if spec is None else load_data(spec, **image_options(args))
