"""How long the finals' beam search keeps other Python threads of the daemon waiting (the GIL).

    .venv/bin/python bench/bench_gil_stall.py                 # embedded model and LM, 8 load-test sentences
    .venv/bin/python bench/bench_gil_stall.py --seconds 20 --probes 3000

Why: in the daemon the engine's inference thread runs the finals' beam search (pyctcdecode + kenlm) while
the event loop's thread serves every websocket (audio frames, Silero, readable formatting). A CPU-bound
Python thread should hand the GIL over every ``sys.getswitchinterval()`` (5 ms). This bench measures
whether it does: a probe thread sleeps 1 ms at a time and records how late it wakes, first alone (the
reference, same run), then while another thread beam-searches real log-probs of the embedded model
(load-test sentences spoken by espeak-ng, joined into ``--seconds`` long utterances) in a loop, then
while the same thread runs a pure-Python loop (what the switch interval should give).

Printed: the probe's lateness p50 / p95 / p99 / max in each phase, and its p99 in units of the switch
interval (1.0 = the interpreter's own bound). A p99 far above it means the search holds the GIL inside
native code, so every other thread of the daemon stalls that long.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import synthesize_clips  # noqa: E402


def lateness_ms(probes: int, busy: Callable[[], None] | None) -> np.ndarray:
    """Wake-up lateness of ``probes`` 1 ms sleeps, with ``busy`` looping in another thread meanwhile."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            busy()

    thread = threading.Thread(target=loop, daemon=True) if busy else None
    if thread:
        thread.start()
        time.sleep(0.05)
    late = np.empty(probes)
    for i in range(probes):
        start = time.perf_counter()
        time.sleep(0.001)
        late[i] = (time.perf_counter() - start - 0.001) * 1e3
    stop.set()
    if thread:
        thread.join()
    return late


def python_work() -> None:
    total = 0
    for i in range(20_000):
        total += i * i


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the embedded model)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each decoded utterance")
    p.add_argument("--probes", type=int, default=1500, help="1 ms sleeps per phase")
    args = p.parse_args(argv)

    import torch

    from model.training.decoding import BeamDecoder
    from model.training.evaluation import load_model, log_probs

    torch.set_num_threads(1)
    model, vocab = load_model(args.model)
    model_dir = Path(args.model) if args.model else ROOT / "model" / "pretrained" / "en-small"
    lm = model_dir / "lm.arpa.gz"
    decoder = BeamDecoder(vocab, lm_path=lm if lm.exists() else None)
    with tempfile.TemporaryDirectory() as tmp:
        clips = synthesize_clips(tmp)
    audio = np.concatenate([c.astype(np.float32) / 32768 for c in clips])
    size = int(args.seconds * 16000)
    pieces = [audio[i : i + size] for i in range(0, len(audio) - size + 1, size)] or [audio]
    utterances = [log_probs(model, piece) for piece in pieces]  # each (frames, vocab)
    started = time.perf_counter()
    for lp in utterances:
        decoder.decode(lp)
    per_search = (time.perf_counter() - started) / len(utterances) * 1e3
    print(f"beam search (LM: {lm.name if lm.exists() else 'none'}): {len(utterances)} utterances of "
          f"{args.seconds:g} s, {per_search:.0f} ms each alone")  # fmt: skip

    turn = itertools.cycle(utterances)

    def search() -> None:
        decoder.decode(next(turn))

    switch_ms = sys.getswitchinterval() * 1e3
    print(f"probe: {args.probes} sleeps of 1 ms per phase; switch interval {switch_ms:g} ms")
    for name, busy in (("alone (reference)", None), ("beam search", search), ("pure Python", python_work)):
        late = lateness_ms(args.probes, busy)
        p50, p95, p99 = np.percentile(late, [50, 95, 99])
        print(f"  {name:18s} lateness p50 {p50:7.2f}  p95 {p95:7.2f}  p99 {p99:7.2f}  max {late.max():7.2f} ms"
              f"   p99 = {p99 / switch_ms:5.1f} x switch interval")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
