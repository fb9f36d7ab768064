"""``conformer-streamer synthesize``: build the synthetic speech corpus (resumable, parallel)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        choices=["train", "eval", "both", "dev"],
        default="both",
        help="both = train + eval; dev = training voices reading development text (for tuning decoding)",
    )
    parser.add_argument("--out", type=Path, default=None, help="corpus root (default: $HOME_DIR/corpus)")
    parser.add_argument("--hours-scale", type=float, default=1.0, help="multiply the default hours per voice")
    parser.add_argument(
        "--voices", default=None, help='JSON {"engine:voice": hours} replacing the default training recipe'
    )
    parser.add_argument(
        "--engines", default=None, help="comma list: only these engines (e.g. flite,festival)"
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--eval-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild-text", action="store_true", help="rebuild the normalized text lists")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from model.training import corpus, synthesis

    root = corpus.home()
    out = args.out or root / "corpus"
    train_rows, eval_rows = corpus.prepare_text(
        root, n_eval=args.eval_size, seed=args.seed, force=args.rebuild_text
    )
    print(f"text: {len(train_rows)} training utterances, {len(eval_rows)} evaluation utterances")
    engines = set(args.engines.split(",")) if args.engines else None
    available = set(synthesis.available_engines())
    if args.split in ("eval", "both"):
        batches = [
            b
            for b in synthesis.plan_eval([t for _, t in eval_rows])
            if b.engine in available and (engines is None or b.engine in engines)
        ]
        n = synthesis.run_batches(batches, out / "eval", workers=args.workers, progress=not args.no_progress)
        synthesis.merge_manifest(out / "eval")
        print(f"eval: {n} new utterances")
    if args.split == "dev":
        dev_rows = corpus.prepare_dev_text(root)
        batches = [
            b
            for b in synthesis.plan_eval([t for _, t in dev_rows], voices=synthesis.DEV_VOICES, prefix="dev")
            if b.engine in available and (engines is None or b.engine in engines)
        ]
        n = synthesis.run_batches(batches, out / "dev", workers=args.workers, progress=not args.no_progress)
        synthesis.merge_manifest(out / "dev")
        print(f"dev: {n} new utterances")
    if args.split in ("train", "both"):
        voices = json.loads(args.voices) if args.voices else dict(synthesis.TRAIN_VOICES)
        voices = {
            k: v
            for k, v in voices.items()
            if k.split(":")[0] in available and (engines is None or k.split(":")[0] in engines)
        }
        batches = synthesis.plan_train(
            [t for _, t in train_rows], voices, hours_scale=args.hours_scale, seed=args.seed
        )
        n = synthesis.run_batches(batches, out / "train", workers=args.workers, progress=not args.no_progress)
        manifest = synthesis.merge_manifest(out / "train")
        print(f"train: {n} new utterances -> {manifest}")
    return 0
