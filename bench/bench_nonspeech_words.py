"""Words a model writes on non-speech, with no voice-activity gate in front: the model's own silence.

    python bench/bench_nonspeech_words.py                      # the embedded model, greedy + beam (+ LM)
    python bench/bench_nonspeech_words.py --model DIR --seconds 10 --seeds 3

Each kind of ``model/training/nonspeech.py`` (silence at several floors, noises, hum, tones, clicks,
music-like notes, fan) is generated ``--seeds`` times, ``--seconds`` long, and transcribed whole as
`evaluate` does (per-input normalization, so a faint floor is as loud as a voice to the model). The
training recipe's non-speech examples come from the same generator, with other seeds; the daemon's gate
(issue 17's VAD) is a separate, second line. Ideal: 0 words everywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.training import decoding, evaluation
from model.training.nonspeech import KINDS, nonspeech


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="HF-layout model dir (default: en-small)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", action="store_true", help="print what was written")
    args = parser.parse_args()

    import torch

    from streamer.beam import resolve_decoder

    torch.set_num_threads(args.threads)
    model, vocab = evaluation.load_model(args.model)
    decoders: dict[str, object] = {"greedy": decoding.GreedyDecoder(vocab)}
    _, lm, _ = resolve_decoder("auto", None, None if args.model is None else str(args.model))
    if lm is not None:
        decoders["beam"] = decoding.BeamDecoder(vocab, lm)
    print(f"model {args.model or 'en-small'}; {args.seeds} x {args.seconds:g} s per kind; LM {lm or 'none'}")
    print(f"{'kind':<10} " + " ".join(f"{name + ' words':>12}" for name in decoders))
    totals = dict.fromkeys(decoders, 0)
    for kind in KINDS:
        counts = dict.fromkeys(decoders, 0)
        for seed in range(args.seeds):
            audio = nonspeech(args.seconds, np.random.default_rng([10_000, seed]), kind)
            lp = evaluation.log_probs(model, audio)
            for name, dec in decoders.items():
                text = dec.decode(lp).text
                counts[name] += len(text.split())
                if args.show and text:
                    print(f"  {kind} seed {seed} {name}: {text}")
        for name in decoders:
            totals[name] += counts[name]
        print(f"{kind:<10} " + " ".join(f"{counts[name]:>12}" for name in decoders))
    seconds = len(KINDS) * args.seeds * args.seconds
    print(f"{'total':<10} " + " ".join(f"{totals[name]:>12}" for name in decoders) + f"   over {seconds:g} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
