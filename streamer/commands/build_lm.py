"""``conformer-streamer build-lm``: word n-gram LM (interpolated Kneser-Ney, ARPA) from the training text."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument(
        "--prune", default="2,2", help="minimum (adjusted) counts kept for orders 2..N (default 2,2)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: $HOME_DIR/lm/en-<order>gram.arpa; a .gz name writes it compressed (the shipped "
        "model/pretrained/en-small/lm.arpa.gz)",
    )


def run(args: argparse.Namespace) -> int:
    from model.training import corpus, lm
    from model.training import text as textmod

    train_rows, _ = corpus.prepare_text()
    prune = tuple(int(x) for x in args.prune.split(",") if x)
    out = args.out or corpus.home() / "lm" / f"en-{args.order}gram.arpa"
    # the cached text lists may predate join_split_compounds (the synthesized corpus was read from them)
    sentences = (textmod.join_split_compounds(t) for _, t in train_rows)
    lm.build_arpa(sentences, out, order=args.order, prune=prune)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) from {len(train_rows)} training utterances")
    return 0
