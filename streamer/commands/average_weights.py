"""``conformer-streamer average-weights``: interpolate two exported models of one architecture."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("first", type=Path, help="exported model folder (its config, LM and card are kept)")
    parser.add_argument("second", type=Path, help="exported model folder of the same architecture")
    parser.add_argument(
        "--weight", type=float, default=0.5, help="share of the second model, 0..1 (default 0.5)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write")


def run(args: argparse.Namespace) -> int:
    from model.training.weight_average import average_exports

    try:
        out = average_exports(args.first, args.second, args.weight, args.out)
    except (OSError, ValueError) as e:
        print(f"average-weights: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {1 - args.weight:g} x {args.first} + {args.weight:g} x {args.second}")
    return 0
