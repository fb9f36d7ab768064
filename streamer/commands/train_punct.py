"""``conformer-streamer train-punct``: train the punctuation/casing model on CPU (``model.training.punct_train``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size", choices=["small", "large", "cnn-small", "cnn-large", "cnn-wide"], default="small"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write the model to")
    parser.add_argument(
        "--calibrate-only",
        action="store_true",
        help="no training: choose the mark offsets of the model in --out on the talk-like development set",
    )
    parser.add_argument(
        "--calibrate-end-only",
        action="store_true",
        help="no training: choose only the end-of-final mark offsets of the model in --out (whole-final dev sets)",
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="training time budget (wall clock)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="pickle of the labelled training utterances (built if missing)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-words", type=int, default=6144, help="words per training batch")
    parser.add_argument("--init", type=Path, default=None, help="continue from this saved model (same size)")
    parser.add_argument(
        "--short-stretches",
        type=int,
        default=0,
        help="add the short one-sentence finals of this many generated stretches of talk (when building --cache)",
    )


def run(args: argparse.Namespace) -> int:
    from model.training.punct_train import calibrate_saved, train

    if args.calibrate_only or args.calibrate_end_only:
        print(json.dumps(calibrate_saved(args.out, args.cache, end_only=args.calibrate_end_only), indent=2))
        return 0
    result = train(
        args.size,
        args.out,
        minutes=args.minutes,
        cache=args.cache,
        seed=args.seed,
        batch_words=args.batch_words,
        init=args.init,
        short_stretches=args.short_stretches,
    )
    print(json.dumps(result, indent=2))
    return 0
