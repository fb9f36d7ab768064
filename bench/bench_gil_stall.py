"""How long the finals' beam search keeps other Python threads of the daemon waiting (the GIL).

    .venv/bin/python bench/bench_gil_stall.py                 # embedded model and LM, 8 load-test sentences
    .venv/bin/python bench/bench_gil_stall.py --seconds 20 --probes 3000

Why: in the daemon the engine's inference thread asks for the finals' beam search (pyctcdecode + kenlm)
while the event loop's thread serves every websocket (audio frames, Silero, readable formatting). Run in
the inference thread, the search's Python competes for the GIL; run in its own process
(``decoder.search_process``, the default), it cannot. Two probes run in the main thread, first alone (the
reference, same run), then while another thread loops over one of:
- the beam search in this process (``decoder.search_process = false``);
- the same search in its child process (``streamer.search_process.BeamSearchProcess``: this thread only
  waits on a pipe);
- a pure-Python loop (what the switch interval alone gives).

The probes: a 1 ms sleep (how late it wakes), and formatting one 20-word final with the shipped
punctuation model (its wall time: what ``conformer_format_seconds`` measures in the daemon; the numpy
forward releases and retakes the GIL ~50 times). Utterances are the load-test sentences spoken by
espeak-ng, joined into ``--seconds`` long pieces. Printed per phase: p50 / p95 / p99 / max in ms and the
p99 in units of the switch interval (1.0 = the interpreter's own bound).
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


def probe_ms(probe: Callable[[], float], probes: int, busy: Callable[[], None] | None) -> np.ndarray:
    """``probes`` results of ``probe()`` (ms) in this thread, with ``busy`` looping in another meanwhile."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            busy()

    thread = threading.Thread(target=loop, daemon=True) if busy else None
    if thread:
        thread.start()
        time.sleep(0.05)
    results = np.array([probe() for _ in range(probes)])
    stop.set()
    if thread:
        thread.join()
    return results


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

    from model.tokenizer import Wav2Vec2CTCTokenizer
    from model.training.decoding import BeamDecoder
    from model.training.evaluation import load_model, log_probs
    from streamer.config import Settings
    from streamer.ctc_merge import Vocabulary
    from streamer.readable import load_punctuator
    from streamer.search_process import BeamSearchProcess

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

    child = BeamSearchProcess(
        Vocabulary.from_tokenizer(Wav2Vec2CTCTokenizer.from_pretrained(str(model_dir))),
        Settings().decoder,
        str(lm) if lm.exists() else None,
    )

    def search_in_child() -> None:
        child.decode_frames(next(turn), 0.0, 0.02)

    punctuator = load_punctuator()
    final_text = "when the train arrived maria picked up her bag and walked to the car where her brother waited for her"
    final = final_text.split(" ")  # 20 words

    def format_ms() -> float:
        started = time.perf_counter()
        punctuator.format_words(final)
        return (time.perf_counter() - started) * 1e3

    def sleep_late_ms() -> float:
        started = time.perf_counter()
        time.sleep(0.001)
        return (time.perf_counter() - started) * 1e3 - 1.0

    switch_ms = sys.getswitchinterval() * 1e3
    phases = (
        ("alone (reference)", None),
        ("search in thread", search),
        ("search in process", search_in_child),
        ("pure Python", python_work),
    )
    for probe_name, probe in (
        ("1 ms sleep, lateness", sleep_late_ms),
        ("formatting a 20-word final", format_ms),
    ):
        print(f"probe: {probe_name}, {args.probes} per phase; switch interval {switch_ms:g} ms")
        for name, busy in phases:
            ms = probe_ms(probe, args.probes, busy)
            p50, p95, p99 = np.percentile(ms, [50, 95, 99])
            print(f"  {name:18s} p50 {p50:7.2f}  p95 {p95:7.2f}  p99 {p99:7.2f}  max {ms.max():7.2f} ms"
                  f"   p99 = {p99 / switch_ms:5.1f} x switch interval")  # fmt: skip
    child.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
