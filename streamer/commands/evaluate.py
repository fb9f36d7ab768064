"""``conformer-streamer evaluate``: WER/CER per evaluation set (synthetic held-out voices, real recordings)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from model.training.decoding import (
    BEAM_WIDTH,
    LM_WEIGHT,
    MIN_WORD_CONFIDENCE,
    UNKNOWN_WORD_SCORE,
    WORD_SCORE,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, default=None, help="HF-layout model dir (default: embedded en-small)"
    )
    parser.add_argument("--decoder", choices=["greedy", "beam", "both"], default="greedy")
    parser.add_argument(
        "--lm",
        type=Path,
        default=None,
        help="ARPA/KenLM LM for --decoder beam, 'none' for none (default: the model's own, e.g. en-small's lm.arpa.gz, else "
        "$HOME_DIR/lm/en-3gram.arpa if present)",
    )
    parser.add_argument(
        "--alpha",
        default=str(LM_WEIGHT),
        help=f"LM weight (default {LM_WEIGHT}); a comma list runs one beam decoder per value (tuning)",
    )
    parser.add_argument(
        "--beta",
        default=str(WORD_SCORE),
        help=f"word insertion bonus (default {WORD_SCORE}); a comma list runs one decoder per value",
    )
    parser.add_argument(
        "--unknown-word-score",
        default=str(UNKNOWN_WORD_SCORE),
        help=f"score of a word the LM does not know (default {UNKNOWN_WORD_SCORE}); a comma list for tuning",
    )
    parser.add_argument(
        "--min-word-confidence",
        default=str(MIN_WORD_CONFIDENCE),
        help=f"drop words whose letter confidence is lower (default {MIN_WORD_CONFIDENCE}); a comma list",
    )
    parser.add_argument("--beam-width", type=int, default=BEAM_WIDTH)
    parser.add_argument(
        "--sets",
        default="synthetic,real",
        help="comma list of: synthetic, real, dev (training voices on development text, augmented, and "
        "the real prompts held back from training: tune --alpha/--beta there, never on the other two)",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N items of each set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", type=int, default=0, help="print N hypotheses per set")
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the recognitions, errors and WER summary of each set "
        "(default: evaluations/<date-time> under the data home)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from model.training import corpus, decoding, evaluation

    torch.set_num_threads(args.threads)
    model, vocab = evaluation.load_model(args.model)
    decoders: dict[str, object] = {}
    if args.decoder in ("greedy", "both"):
        decoders["greedy"] = decoding.GreedyDecoder(vocab)
    if args.decoder in ("beam", "both"):
        from streamer.beam import resolve_decoder

        lm_arg = None if args.lm is None else str(args.lm)
        _, lm, _ = resolve_decoder("beam", lm_arg, None if args.model is None else str(args.model))
        grid = [
            (float(a), float(b), float(u), float(c))
            for a in args.alpha.split(",")
            for b in args.beta.split(",")
            for u in args.unknown_word_score.split(",")
            for c in args.min_word_confidence.split(",")
        ]
        for alpha, beta, unknown, confidence in grid:
            name = "beam" if len(grid) == 1 else f"a{alpha:g}/b{beta:g}/u{unknown:g}/c{confidence:g}"
            decoders[name] = decoding.BeamDecoder(
                vocab,
                lm,
                alpha=alpha,
                beta=beta,
                beam_width=args.beam_width,
                unknown_word_score=unknown,
                min_word_confidence=confidence,
            )
        print(f"beam: LM {lm or 'none'} alpha,beta,unknown,confidence {grid} width={args.beam_width}")
    sets = {
        "synthetic": lambda: evaluation.synthetic_items(corpus.home()),
        "real": evaluation.real_items,
        "dev": lambda: evaluation.dev_items(corpus.home()),
    }
    readers = {"dev": evaluation.augmented_reader()}
    results = {}
    out_dir = args.out or corpus.home() / "evaluations" / time.strftime("%Y%m%d-%H%M%S")
    print(f"{'set':<10} {'decoder':<9} {'n':>4} {'words':>6} {'WER':>7} {'CER':>7} {'RTF':>7}")
    for name in args.sets.split(","):
        items = sets[name]()[: args.limit]
        if not items:
            print(f"{name:<10} (no data)")
            continue
        res = evaluation.evaluate(model, vocab, items, decoders, readers.get(name))
        results[name] = res
        evaluation.write_results(out_dir, name, res)
        for dec, r in res["rates"].items():
            print(
                f"{name:<10} {dec:<9} {res['n']:>4} {r['words']:>6} {100 * r['wer']:>6.1f}% {100 * r['cer']:>6.1f}% "
                f"{res['rtf']:>7.3f}"
            )
        for group, rates in res["by_group"].items():
            for dec in decoders:
                r = rates[dec]
                print(
                    f"  {group:<30} {dec:<9} {rates['n']:>4} {r['words']:>6} "
                    f"{100 * r['wer']:>6.1f}% {100 * r['cer']:>6.1f}%"
                )
        for row in res["items"][: args.show]:
            print("   REF:", row["ref"])
            for dec in decoders:
                print(f"   {dec[:4].upper()}:", row[dec])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"recognitions, errors and WER summaries in {out_dir}")
    return 0
