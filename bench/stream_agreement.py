"""How far streamed finals stray from the offline transcript across many clips, not just the test's one.

    .venv/bin/python bench/stream_agreement.py [--model DIR] [--voices kal16,awb,slt] [--seeds 1,2]
        [--layouts 1.0/0.5,1.5/0.5] [--chunks 0.25,0.5,1,2]

Each seed and voice makes one ``--seconds`` clip of one voice (bench_streaming.synthesize_speech); each
layout (left context / look-ahead seconds) streams it at every chunk size in 0.1 s packets and scores the
finals against `RecognitionEngine.transcribe` of the same clip (issue 4's bound: CER <= 1%). Prints every
run and, per layout, the mean, the range and how many runs met the bound, then the CER of the offline
transcripts and of the streamed finals against the synthesized text: what a user sees, since two models can
disagree with their own offline transcript equally while one is more accurate. ``--second-pass`` scores what a
two-pass design would give instead: each streamed utterance decoded again offline, on its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def utterance_audio(audio, final, margin_s: float = 0.3):
    """The samples of one streamed final's span, with a margin each side."""
    first = max(0, int((final.start - margin_s) * 16000))
    return audio[first : min(len(audio), int((final.end + margin_s) * 16000))]


def main(argv: list[str] | None = None) -> int:
    from bench_streaming import voice_list

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: the embedded model)")
    parser.add_argument(
        "--voices",
        type=voice_list,
        default=["kal16", "awb", "slt"],
        help="flite voices, one clip per voice and seed",
    )
    parser.add_argument("--seeds", default="1,2", help="text seeds (the tests use seed 0)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--layouts", default="1.0/0.5,1.5/0.5,1.5/0.25,1.0/0.75", help="left/look-ahead s")
    parser.add_argument("--chunks", type=floats, default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--decoder", default="auto", choices=["auto", "greedy", "beam"])
    parser.add_argument(
        "--second-pass",
        action="store_true",
        help="score offline re-decodes of each streamed utterance (its span +- 0.3 s) instead of the finals",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from bench_streaming import error_rates, streaming_run, synthesize_speech

    from streamer.config import Settings
    from streamer.engine import RecognitionEngine

    torch.set_num_threads(args.threads)
    settings = Settings()
    settings.model.path = args.model
    settings.model.threads = args.threads
    settings.decoder.method = args.decoder
    engine = RecognitionEngine(settings)
    layouts = [tuple(float(v) for v in layout.split("/")) for layout in args.layouts.split(",")]
    results: dict[tuple[float, float], list[float]] = {layout: [] for layout in layouts}
    offline_vs_text: list[float] = []
    streamed_vs_text: dict[tuple[float, float], list[float]] = {layout: [] for layout in layouts}
    print(
        f"model {engine.model_name}, decoder {args.decoder}; CER % of streamed vs offline, chunks {args.chunks} s"
    )
    for voice in args.voices:
        for seed in (int(s) for s in args.seeds.split(",")):
            audio, truth = synthesize_speech(args.seconds, seed=seed, voices=[voice])
            offline = engine.transcribe(audio).text
            offline_vs_text.append(error_rates(offline, truth)[0] * 100)
            for left, ahead in layouts:
                row = []
                for chunk in args.chunks:
                    layout = dict(left_context_s=left, chunk_s=chunk, lookahead_s=ahead)
                    engine.set_streaming(dataclasses.replace(settings.streaming, **layout))
                    _, text, finals = streaming_run(engine, audio)
                    if args.second_pass:
                        text = " ".join(
                            engine.transcribe(utterance_audio(audio, f)).text for f in finals if f.text
                        )
                    row.append(error_rates(text, offline)[0] * 100)
                    streamed_vs_text[(left, ahead)].append(error_rates(text, truth)[0] * 100)
                results[(left, ahead)] += row
                cers = " ".join(f"{c:5.2f}" for c in row)
                print(f"{voice:>6} seed {seed} left {left:4.2f} look-ahead {ahead:4.2f}: {cers}", flush=True)
    for (left, ahead), cers in results.items():
        within = sum(c <= 1.0 for c in cers)
        print(
            f"left {left:4.2f} look-ahead {ahead:4.2f}: mean {sum(cers) / len(cers):.2f}% "
            f"({min(cers):.2f}-{max(cers):.2f}), {within}/{len(cers)} runs within 1%"
        )
    print(
        f"CER % vs the synthesized text: offline {sum(offline_vs_text) / len(offline_vs_text):.2f}, "
        + ", ".join(
            f"streamed {left:.2f}/{ahead:.2f} {sum(v) / len(v):.2f}"
            for (left, ahead), v in streamed_vs_text.items()
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
