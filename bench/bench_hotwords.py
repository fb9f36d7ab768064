"""Hotwords: does boosting a rare name raise its recall without hurting the other words?

Held-out synthetic sentences (flite ``rms``, a voice never heard in training) that each contain one of a
few rare names, transcribed offline with the default beam search (the model's LM), with and without the
names as hotwords (``transcribe_audio(..., hotwords=...)``, pyctcdecode's hotword scorer). Prints the
names' recall and the word error rate of the other words for each boost.

    PYTHONPATH=. python bench/bench_hotwords.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.audio import load_audio
from streamer.commands.transcribe import load_recognizer, transcribe_audio
from streamer.grammar import Hotword

NAMES = ["KOWALSKI", "ZELENKA", "MAGNUSSEN", "OKONKWO"]
TEMPLATES = [
    "PLEASE CALL {} TOMORROW MORNING",
    "I MET {} AT THE STATION",
    "THE REPORT FROM {} IS READY",
    "SEND THE LETTER TO DOCTOR {}",
    "{} WILL BE LATE TODAY",
]


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voice", default="rms")
    parser.add_argument("--boosts", default="0,5,10,20")
    args = parser.parse_args()
    recognizer = load_recognizer()
    sentences = [t.format(name) for name in NAMES for t in TEMPLATES]
    audio = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, sentence in enumerate(sentences):
            out = Path(tmp) / f"{k}.wav"
            subprocess.run(
                ["flite", "-voice", args.voice, "-t", sentence.lower(), "-o", str(out)], check=True
            )
            audio.append(load_audio(out, 16000))
    print(f"{len(sentences)} sentences, {len(NAMES)} names, voice {args.voice}")
    print(f"{'boost':>6} {'name recall':>12} {'WER of the other words':>23}")
    for boost in (float(b) for b in args.boosts.split(",")):
        hits, errors, words = 0, 0, 0
        hotwords = [Hotword(n, boost) for n in NAMES] if boost else None
        for sentence, samples in zip(sentences, audio, strict=True):
            text = transcribe_audio(samples, recognizer, hotwords=hotwords).text.upper().split()
            truth = sentence.split()
            name = next(n for n in NAMES if n in truth)
            hits += name in text
            rest_truth = [w for w in truth if w != name]
            rest = [w for w in text if w not in NAMES]
            errors += edit_distance(rest_truth, rest)
            words += len(rest_truth)
        print(f"{boost:6g} {hits / len(sentences):12.0%} {errors / words:23.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
