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
    parser.add_argument(
        "--exclude-sources",
        default="words",
        help="comma list of text sources left out of the LM, matched by prefix on the first column of "
        "text/train.txt (default: 'words', the random word sequences that teach the acoustic model "
        "rare words but are not language; '' keeps all)",
    )


def run(args: argparse.Namespace) -> int:
    from model.training import corpus, lm
    from model.training import text as textmod

    train_rows, _ = corpus.prepare_text()
    excluded = tuple(x for x in args.exclude_sources.split(",") if x)
    rows = [(source, t) for source, t in train_rows if not (excluded and source.startswith(excluded))]
    prune = tuple(int(x) for x in args.prune.split(",") if x)
    out = args.out or corpus.home() / "lm" / f"en-{args.order}gram.arpa"
    # the LM writes today's spelling of the sources' archaic splits; the text lists keep the sources'
    sentences = (textmod.join_split_compounds(t) for _, t in rows)
    lm.build_arpa(sentences, out, order=args.order, prune=prune)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) from {len(rows)} training utterances")
    return 0
