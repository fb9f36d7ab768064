"""Offline transcription of long audio: one forward pass vs overlapping windows of several lengths.

    .venv/bin/python bench/bench_offline_windows.py [--model DIR] [--seconds 62] [--windows 15,30]

For each audio (synthesized bench sentences, bench_streaming.synthesize_speech: one flite voice, or
voices in turn, one per sentence) it prints the greedy CER against the true text of ``transcribe``'s
frame path with the whole audio in one pass and with windows of each length (3 s of context at each
inner edge, kept frames decoded once). The default window of ``conformer-streamer transcribe`` was
chosen from this table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# (label, flite voices in turn or None for bench_streaming's four, seed)
AUDIOS = [("4 voices", None, 3), ("4 voices", None, 7), ("kal16", ["kal16"], 3), ("awb", ["awb"], 3)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: the embedded model)")
    parser.add_argument("--seconds", type=float, default=62.0)
    parser.add_argument("--windows", default="30,15,10", help="comma list of window lengths in seconds")
    parser.add_argument("--context", type=float, default=3.0, help="context seconds at inner window edges")
    args = parser.parse_args(argv)

    import torch
    from bench_streaming import error_rates, synthesize_speech

    from streamer.commands import transcribe

    torch.set_num_threads(2)
    windows = [float(w) for w in args.windows.split(",")]
    recognizer = transcribe.load_recognizer(args.model)
    tokenizer = recognizer.processor.tokenizer
    print(f"greedy CER vs the true text, {args.seconds:.0f} s per audio")
    print(f"{'audio':<10} {'seed':>4} {'one pass':>9} " + " ".join(f"{f'{w:g} s':>7}" for w in windows))
    for label, voices, seed in AUDIOS:
        audio, truth = synthesize_speech(args.seconds, seed=seed, voices=voices)
        whole = len(audio) / 16000 + 1
        row = []
        for limit, window in [(whole, whole), *((w, w) for w in windows)]:
            log_probs = transcribe.frame_log_probs(
                audio, recognizer, whole_file_limit_s=limit, window_s=window, context_s=args.context
            )
            text = transcribe.greedy_decode(log_probs, tokenizer, recognizer.frame_seconds).text
            row.append(100 * error_rates(text, truth)[0])
        print(f"{label:<10} {seed:>4} {row[0]:>8.1f}% " + " ".join(f"{c:>6.1f}%" for c in row[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
