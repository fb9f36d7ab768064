"""Streamed vs offline WER, both against the synthesized (true) text: the criterion of
tests/test_stream_accuracy.py (streamed within 1 point of offline), on more clips than the tests use.

    .venv/bin/python bench/stream_wer_vs_truth.py [--clips kal16:0,awb:0,slt:0,mix:3,mix:4,rms:1]
        [--chunks 0.25,0.5,1,2] [--model DIR] [--left-context-s 2 --lookahead-s 0.5]

A clip is ``VOICES:SEED``: one flite voice, or ``mix`` for kal16/awb/slt/rms in turn (62 s; one voice: 60 s,
``rms``: 80 s, as in the tests). Each clip is transcribed offline (`RecognitionEngine.transcribe`) and streamed
in 0.1 s packets at every chunk size with the default window layout otherwise; prints both WERs, the
difference in points and the seconds each took, then each voice's clips pooled (one WER over all their
words, as the tests pool them).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SECONDS = {"mix": 62.0, "rms": 80.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clips", default="kal16:0,awb:0,slt:0,mix:3,mix:4,mix:5,mix:6,rms:1,rms:2,rms:3,rms:4"
    )
    parser.add_argument("--chunks", default="0.5", help="chunk sizes in seconds, comma-separated")
    parser.add_argument("--model", help="model directory (default: the embedded model)")
    parser.add_argument("--left-context-s", type=float, help="window left context (default: the daemon's)")
    parser.add_argument("--lookahead-s", type=float, help="window look-ahead (default: the daemon's)")
    args = parser.parse_args(argv)

    import jiwer
    from bench_streaming import synthesize_speech

    from streamer.config import Settings
    from streamer.engine import RecognitionEngine

    settings = Settings()
    settings.model.path = args.model
    if args.left_context_s is not None:
        settings.streaming.left_context_s = args.left_context_s
    if args.lookahead_s is not None:
        settings.streaming.lookahead_s = args.lookahead_s
    engine = RecognitionEngine(settings)
    default = dataclasses.replace(engine.settings.streaming)
    chunks = [float(c) for c in args.chunks.split(",")]
    pooled: dict[str, dict[str, list[str]]] = {}  # voice -> "truth" / "offline" / chunk -> texts
    for clip in args.clips.split(","):
        voice, seed = clip.split(":")
        voices = None if voice == "mix" else [voice]
        started = time.monotonic()
        audio, truth = synthesize_speech(SECONDS.get(voice, 60.0), seed=int(seed), voices=voices)
        offline_text = engine.transcribe(audio).text
        offline = jiwer.wer(truth, offline_text)
        texts = pooled.setdefault(voice, {})
        texts.setdefault("truth", []).append(truth)
        texts.setdefault("offline", []).append(offline_text)
        line = f"{clip:>9} {len(truth.split()):4d} words  offline {offline:6.2%}"
        for chunk_s in chunks:
            engine.set_streaming(dataclasses.replace(default, chunk_s=chunk_s))
            finals = engine.transcribe_stream(audio, 1600)
            streamed_text = " ".join(f.text for f in finals if f.text)
            texts.setdefault(str(chunk_s), []).append(streamed_text)
            streamed = jiwer.wer(truth, streamed_text)
            line += f"  chunk {chunk_s:g} s: {streamed:6.2%} ({100 * (streamed - offline):+.2f})"
        engine.set_streaming(default)
        print(f"{line}  [{time.monotonic() - started:.0f} s]", flush=True)
    for voice, texts in pooled.items():
        offline = jiwer.wer(texts["truth"], texts["offline"])
        line = f"{voice:>5} pooled ({len(texts['truth'])} clips) offline {offline:6.2%}"
        for chunk_s in chunks:
            streamed = jiwer.wer(texts["truth"], texts[str(chunk_s)])
            line += f"  chunk {chunk_s:g} s: {streamed:6.2%} ({100 * (streamed - offline):+.2f})"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
