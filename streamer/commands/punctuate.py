"""``conformer-streamer punctuate``: lower-case transcripts on stdin -> one readable line per input line.

The words never change (same letters, same order): only their case and the marks after them do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="punctuation model directory (default: the embedded punct-en)",
    )


def run(args: argparse.Namespace) -> int:
    from streamer.readable import load_punctuator

    try:
        punctuator = load_punctuator(args.model)
    except (OSError, ValueError) as error:
        print(f"error: cannot load punctuation model: {error}", file=sys.stderr)
        return 2
    for line in sys.stdin:
        sys.stdout.write(punctuator.format_text(line) + "\n")
        sys.stdout.flush()
    return 0
