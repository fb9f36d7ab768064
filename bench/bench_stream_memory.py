"""Memory of one long stream through the embedded model: 1 hour of speech, RSS and Python heap per 10 min.

    .venv/bin/python bench/bench_stream_memory.py [--minutes 60] [--model DIR]

The synthesized test speech (bench_streaming.synthesize_speech) is looped and fed through the engine's
synchronous path in 0.5 s packets as fast as the model runs. Goal (issue 4): memory flat over the hour.
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_streaming import synthesize_speech  # noqa: E402
from loadgen import rss_kib  # noqa: E402

from streamer.config import Settings  # noqa: E402
from streamer.engine import RecognitionEngine  # noqa: E402
from streamer.events import Final  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    settings = Settings()
    settings.model.path = args.model
    engine = RecognitionEngine(settings)
    finals = 0

    def count_finals(event: object) -> None:  # keeps no events: the heap figure is the engine's own
        nonlocal finals
        finals += isinstance(event, Final)

    stream = engine.open_stream(count_finals)
    speech, _ = synthesize_speech(60.0, seed=3)
    minute = np.resize(speech, 60 * 16000).astype(np.float32)
    rows = []
    tracemalloc.start()
    for m in range(1, args.minutes + 1):
        for i in range(0, len(minute), 8000):
            stream.accept(minute[i : i + 8000])
            engine.scheduler.run_round()
        if m == 1 or m % 10 == 0:
            rows.append(
                (m, (rss_kib(os.getpid()) or 0) / 1024, tracemalloc.get_traced_memory()[0] / 2**20, finals)
            )
            print(
                f"minute {m:3d}: RSS {rows[-1][1]:7.1f} MiB, Python heap {rows[-1][2]:6.2f} MiB, finals {finals}"
            )
    tracemalloc.stop()
    base = next((r for r in rows if r[0] >= 10), rows[0])
    growth = 100 * (rows[-1][1] - base[1]) / base[1]
    print(
        f"RSS growth from minute {base[0]} to {rows[-1][0]}: {growth:+.2f}%; Python heap "
        f"{base[2]:.2f} -> {rows[-1][2]:.2f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
