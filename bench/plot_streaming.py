"""Sweep the streaming window layout and plot agreement with offline decoding and compute.

    .venv/bin/python bench/plot_streaming.py [--model DIR] [--seconds 60] [--out docs/streaming_tradeoffs.png]

For each layout the synthesized test audio (bench_streaming.synthesize_speech) is streamed through the
engine (synchronous path, 0.1 s packets) and compared with offline recognition: CER of the streamed
finals against the offline transcript (`RecognitionEngine.transcribe`: 15 s windows past 15 s, as
`conformer-streamer transcribe`), and model compute (streaming forward seconds / the seconds of one
offline forward over the whole audio, the cheaper reference). Panels: chunk size, left context and look-ahead, each for per-window and
running (cached-feature) normalization. Prints every figure as a table too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

# CPU-time figures: idle OpenMP workers must sleep, not spin (spinning bills CPU time to the benchmark
# whenever the shared machine is busy).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# Each sweep varies one size around these (the committed PNG used left 2.0 s, chunk 0.5 s, look-ahead 0.5 s).
DEFAULTS = {"left_context_s": 2.0, "chunk_s": 0.5, "lookahead_s": 0.5}
SWEEPS = {
    "chunk_s": [0.25, 0.5, 1.0, 2.0],
    "left_context_s": [0.0, 0.5, 1.0, 2.0, 4.0],
    "lookahead_s": [0.02, 0.2, 0.5, 1.0],
}


def main(argv: list[str] | None = None) -> int:
    from bench_streaming import voice_list

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: the embedded model)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--voices", type=voice_list, help="comma list of flite voices, one per sentence in turn (default: 4)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs" / "streaming_tradeoffs.png"))
    parser.add_argument("--json", help="also write the measurements here")
    parser.add_argument("--normalizations", default="window,running")
    parser.add_argument("--center", default=None, help="left,chunk,look-ahead seconds the sweeps vary around")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from bench_streaming import error_rates, offline_seconds, streaming_run, synthesize_speech

    from streamer.config import Settings
    from streamer.engine import RecognitionEngine

    torch.set_num_threads(args.threads)
    if args.center:
        DEFAULTS.update(zip(DEFAULTS, (float(v) for v in args.center.split(",")), strict=True))
    settings = Settings()
    settings.model.path = args.model
    settings.model.threads = args.threads
    engine = RecognitionEngine(settings)
    audio, _ = synthesize_speech(args.seconds, voices=args.voices)
    offline_s = offline_seconds(engine, audio)
    offline = engine.transcribe(audio).text
    print(
        f"model {engine.model_name}; audio {len(audio) / 16000:.1f} s; offline forward {offline_s:.2f} CPU s"
    )
    print(
        f"{'normalization':>13} {'left':>5} {'chunk':>5} {'ahead':>5} {'CER%':>6} {'WER%':>6} {'compute':>7}"
    )
    rows = []
    norms = args.normalizations.split(",")
    for norm in norms:
        for name, values in SWEEPS.items():
            for value in values:
                layout = {**DEFAULTS, name: value}
                engine.set_streaming(dataclasses.replace(settings.streaming, normalization=norm, **layout))
                cpu_s, text, _ = streaming_run(engine, audio)
                compute = cpu_s / offline_s
                cer, wer = error_rates(text, offline)
                rows.append(
                    {
                        "normalization": norm,
                        "sweep": name,
                        **layout,
                        "cer": cer,
                        "wer": wer,
                        "compute": compute,
                    }
                )
                print(
                    f"{norm:>13} {layout['left_context_s']:5.2f} {layout['chunk_s']:5.2f} "
                    f"{layout['lookahead_s']:5.2f} {cer * 100:6.2f} {wer * 100:6.2f} {compute:6.2f}x",
                    flush=True,
                )

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex="col")
    labels = {"chunk_s": "chunk (s)", "left_context_s": "left context (s)", "lookahead_s": "look-ahead (s)"}
    for col, name in enumerate(SWEEPS):
        for norm, marker in zip(norms, "os", strict=False):
            pts = [r for r in rows if r["sweep"] == name and r["normalization"] == norm]
            xs = [r[name] for r in pts]
            axes[0, col].plot(xs, [r["cer"] * 100 for r in pts], marker=marker, label=f"{norm} norm.")
            axes[1, col].plot(xs, [r["compute"] for r in pts], marker=marker, label=f"{norm} norm.")
        others = ", ".join(f"{labels[k].split(' (')[0]} {v:g}" for k, v in DEFAULTS.items() if k != name)
        axes[0, col].set_title(f"vs {labels[name]} ({others})", fontsize=9)
        axes[1, col].set_xlabel(labels[name])
        axes[1, col].axhline(2.0, color="grey", lw=0.8, ls="--")
    axes[0, 0].set_ylabel("CER of streamed vs offline transcript (%)")
    axes[1, 0].set_ylabel("streaming CPU time / offline CPU time")
    axes[0, 0].legend()
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Streaming trade-offs: {engine.model_name}, {len(audio) / 16000:.0f} s synthesized speech "
        f"({','.join(args.voices or []) or '4 voices in turn'}), {args.threads} CPU threads"
    )
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}; made with: .venv/bin/python bench/plot_streaming.py {' '.join(sys.argv[1:])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"offline_s": offline_s, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
