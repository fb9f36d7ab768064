"""Accuracy on the real recordings: our embedded model vs pocketsphinx, same files, same run.

    python bench/bench_accuracy.py                       # embedded model, greedy + beam (if an LM exists)
    python bench/bench_accuracy.py --model DIR --lm LM.arpa --show

Real recordings (/work/shared/eval/real) are for reporting only: never train or tune on them.
pocketsphinx: PyPI package with its bundled en-us acoustic model, dictionary and LM, full-utterance
decoding. Corpus WER = total word errors / total reference words. "in-LM" = the share of the words a system
printed that are in the word LM's vocabulary (dictionary words, not letter soup). The beam search runs with
the model's own LM (lm.arpa.gz beside it) unless --lm says otherwise, as the daemon's default decoder does;
"beam+lm (no word filter)" is the same search without the unknown-word score and letter-confidence floor.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.training import corpus, decoding, evaluation


def pocketsphinx_transcribe(paths: list[str]) -> tuple[list[str], float]:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    out, seconds = [], 0.0
    for path in paths:
        audio = evaluation.read_audio(path)
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        t = time.perf_counter()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        seconds += time.perf_counter() - t
        hyp = decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        out.append(" ".join(w for w in text.upper().split() if not w.startswith(("<", "[", "++"))))
    return out, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--lm", type=Path, default=None)
    parser.add_argument("--alpha", type=float, default=decoding.LM_WEIGHT)
    parser.add_argument("--beta", type=float, default=decoding.WORD_SCORE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from model.training.text import normalize

    torch.set_num_threads(args.threads)
    items = evaluation.real_items()
    if not items:
        print("no real recordings found")
        return 1
    refs = [it.text for it in items]
    model, vocab = evaluation.load_model(args.model)
    decoders = {"greedy": decoding.GreedyDecoder(vocab)}
    from streamer.beam import model_lm

    shipped = model_lm(None if args.model is None else str(args.model))
    lm = args.lm or (Path(shipped) if shipped else corpus.home() / "lm" / "en-3gram.arpa")
    unigrams: set[str] = set()
    if lm.exists():
        decoders["beam+lm"] = decoding.BeamDecoder(vocab, lm, alpha=args.alpha, beta=args.beta)
        decoders["beam+lm (no word filter)"] = decoding.BeamDecoder(
            vocab, lm, alpha=args.alpha, beta=args.beta, unknown_word_score=-10.0, min_word_confidence=0.0
        )
        if str(lm).endswith((".arpa", ".arpa.gz")):
            unigrams = set(decoding.read_unigrams(lm))
    res = evaluation.evaluate(model, vocab, items, decoders)
    ps_hyps, ps_s = pocketsphinx_transcribe([it.path for it in items])
    ps_hyps = [normalize(h) for h in ps_hyps]
    audio_s = res["audio_s"]
    print(f"real recordings: {len(items)} files, {audio_s:.0f} s, {sum(len(r.split()) for r in refs)} words")

    def in_lm(hyps: list[str]) -> str:
        words = [w for h in hyps for w in h.split()]
        if not unigrams or not words:
            return "-"
        return f"{100 * sum(w in unigrams for w in words) / len(words):.1f}% of {len(words)}"

    print(f"LM vocabulary: {lm} ({len(unigrams)} words)")
    print(f"{'system':<45} {'WER':>7} {'CER':>7} {'RTF':>7}  in-LM words")
    for name, rates in res["rates"].items():
        hyps = [row[name] for row in res["items"]]
        print(
            f"{'ours en-small ' + name:<45} {100 * rates['wer']:>6.1f}% {100 * rates['cer']:>6.1f}% "
            f"{res['rtf']:>7.3f}  {in_lm(hyps)}"
        )
    ps = evaluation.error_rates(refs, ps_hyps)
    print(
        f"{'pocketsphinx en-us (full utt)':<45} {100 * ps['wer']:>6.1f}% {100 * ps['cer']:>6.1f}% "
        f"{ps_s / audio_s:>7.3f}  {in_lm(ps_hyps)}"
    )
    if args.show:
        for row, ps_h in zip(res["items"], ps_hyps, strict=True):
            print(f"\n{row['id']}\n  REF  {row['ref']}")
            for name in decoders:
                print(f"  {name[:6]:<6} {row[name]}")
            print(f"  psphx  {ps_h}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
