"""``conformer-streamer build-lm``: word n-gram LM (interpolated Kneser-Ney, ARPA) from the training text."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--prune", default="1,2", help="minimum counts kept for orders 2..N (e.g. 1,2)")
    parser.add_argument("--out", type=Path, default=None, help="default: $HOME_DIR/lm/en-<order>gram.arpa")


def run(args: argparse.Namespace) -> int:
    from model.training import corpus, lm

    train_rows, _ = corpus.prepare_text()
    prune = tuple(int(x) for x in args.prune.split(",") if x)
    out = args.out or corpus.home() / "lm" / f"en-{args.order}gram.arpa"
    lm.build_arpa((t for _, t in train_rows), out, order=args.order, prune=prune)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) from {len(train_rows)} training utterances")
    return 0
