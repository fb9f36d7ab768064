"""Speech gate benchmark: Silero VAD vs the energy gate vs no gate, in one run, with the shipped model.

    .venv/bin/python bench/bench_vad.py                       # all three parts (a few minutes on 2 cores)
    .venv/bin/python bench/bench_vad.py --noise-minutes 2 --compare-minutes 0.5   # shorter noise part

Figures:
1. compute on a stream that is half non-speech: TTS sentences (flite voices), each followed by as long a
   gap, the gaps either quiet (-70 dBFS noise) or noisy (pink noise at -40 dBFS, a quiet room with a
   fan); per gate the model windows run, model forward seconds, the VAD's CPU seconds, whole-process CPU
   seconds per audio second (the fraction of one core), and the ratio to no gate;
2. endpoint latency: stream time from the end of each sentence (last sample above -45 dBFS) to the
   Final that closes it, fed in 20 ms packets on the synchronous path (the latency the windowing and
   endpointing rules imply; the model's compute time, in part 1, comes on top);
3. 10 min (``--noise-minutes``) of mixed non-speech (silence floors, white/pink/brown noise, hum, tones,
   sweeps, clicks, DTMF), streamed: partials and finals with text (there should be none) and compute; its
   first minute (``--compare-minutes``) also through the energy gate and no gate, where the model runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP workers sleep: CPU time is work
ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_streaming import SENTENCES  # noqa: E402

from streamer.config import Settings  # noqa: E402
from streamer.engine import RecognitionEngine  # noqa: E402
from streamer.events import Event, Final, Partial  # noqa: E402

RATE = 16_000
GATES = ("silero", "energy", "none")


def settings_for(gate: str, threads: int) -> Settings:
    s = Settings()
    s.model.threads = threads
    if gate == "none":
        s.streaming.vad = "energy"
        s.endpoint.energy_gate_dbfs = -float("inf")
    else:
        s.streaming.vad = gate
    return s


def sentences(count: int) -> list[np.ndarray]:
    """``count`` sentences spoken by flite voices in turn (espeak-ng without flite), 16 kHz float32."""
    from model.audio import load_audio

    flite = shutil.which("flite")
    voices = ["kal16", "awb", "slt", "rms"] if flite else ["en-us", "en"]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            wav = Path(tmp) / f"{i}.wav"
            text, voice = SENTENCES[i % len(SENTENCES)], voices[i % len(voices)]
            cmd = (
                ["flite", "-voice", voice, "-t", text, "-o", str(wav)]
                if flite
                else ["espeak-ng", "-v", voice, "-w", str(wav), text]
            )
            subprocess.run(cmd, check=True, capture_output=True)
            out.append(load_audio(wav))
    return out


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    x = np.fft.irfft(spectrum, n)
    return (x / np.abs(x).max()).astype(np.float32)


def at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    """``x`` scaled to an RMS level of ``dbfs``."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 1.0
    return (x * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def speech_bounds(x: np.ndarray, dbfs: float = -45.0) -> tuple[int, int]:
    """First and one-past-last sample of the 10 ms blocks louder than ``dbfs``."""
    n = len(x) // 160
    levels = 10 * np.log10(np.mean(np.square(x[: n * 160].reshape(n, 160)), axis=1) + 1e-12)
    loud = np.flatnonzero(levels > dbfs)
    return int(loud[0]) * 160, (int(loud[-1]) + 1) * 160


def half_silence(clips: list[np.ndarray], gap: Callable[[int], np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Each clip followed by a gap as long as itself; returns the audio and each sentence's end sample."""
    parts, ends, pos = [], [], 0
    for clip in clips:
        _, last = speech_bounds(clip)
        ends.append(pos + last)
        parts += [clip, gap(len(clip))]
        pos += 2 * len(clip)
    return np.concatenate(parts), ends


def mixed_noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Non-speech in 10 s blocks: silence floors, noises, hum, tones, sweeps, clicks, DTMF, in turn."""
    rng = np.random.default_rng(seed)
    n = 10 * RATE
    t = np.arange(n) / RATE

    def clicks() -> np.ndarray:
        x = np.zeros(n, np.float32)
        x[:: RATE // 4] = 0.9
        return x

    makers: list[Callable[[], np.ndarray]] = [
        lambda: np.zeros(n, np.float32),
        lambda: at_dbfs(rng.standard_normal(n), -80),
        lambda: at_dbfs(pink(n, rng), -60),
        lambda: at_dbfs(np.cumsum(rng.standard_normal(n)), -45),
        lambda: at_dbfs(rng.standard_normal(n), -15),
        lambda: at_dbfs(pink(n, rng), -15),
        lambda: at_dbfs(np.cumsum(rng.standard_normal(n)), -12),
        lambda: at_dbfs(sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3)), -20),
        lambda: at_dbfs(sum(np.sin(2 * np.pi * 60 * k * t) / k for k in (1, 2, 3)), -20),
        lambda: at_dbfs(np.sin(2 * np.pi * 440 * t), -12),
        lambda: at_dbfs(np.sin(2 * np.pi * 1000 * t), -12),
        lambda: at_dbfs(np.sin(2 * np.pi * 697 * t) + np.sin(2 * np.pi * 1209 * t), -12),
        lambda: at_dbfs(np.sin(2 * np.pi * (100 + 400 * t) * t), -12),
        clicks,
        lambda: at_dbfs(pink(n, rng), -30) + at_dbfs(np.sin(2 * np.pi * 120 * t), -35),  # a fan
    ]
    blocks = [makers[i % len(makers)]() for i in range(int(np.ceil(seconds / 10)))]
    return np.concatenate(blocks)[: int(seconds * RATE)].astype(np.float32)


@dataclasses.dataclass
class Run:
    finals: list[tuple[float, Final]]  # (stream time when emitted, final)
    partials_with_text: int
    windows: int
    gated: int
    model_s: float
    cpu_s: float
    vad_cpu_s: float
    audio_s: float


def stream(engine: RecognitionEngine, audio: np.ndarray, packet: int = 320) -> Run:
    """Feed ``audio`` in ``packet``-sample pieces on the synchronous path; events stamped with stream time."""
    stamped: list[tuple[float, Event]] = []
    fed = [0]
    stream = engine.open_stream(lambda e: stamped.append((fed[0] / RATE, e)), sample_rate=RATE)
    before = engine.stats()
    gate = stream.intake.speech_gate  # the bench reads the gate's own cost counters
    vad_cpu = 0.0
    cpu = time.process_time()
    feed = gate.feed if gate is not None else None
    if feed is not None:

        def timed_feed(samples: np.ndarray) -> None:
            nonlocal vad_cpu
            t = time.process_time()
            feed(samples)
            vad_cpu += time.process_time() - t

        gate.feed = timed_feed  # type: ignore[method-assign]
    for i in range(0, len(audio), packet):
        stream.accept(audio[i : i + packet])
        fed[0] = min(i + packet, len(audio))
        engine.scheduler.run_round([stream])
    stream.end()
    while not stream.done.is_set():
        if engine.scheduler.run_round([stream]) == 0 and not stream.has_ready():
            break
    cpu = time.process_time() - cpu
    after = engine.stats()
    return Run(
        finals=[(t, e) for t, e in stamped if isinstance(e, Final) and e.text],
        partials_with_text=sum(
            1 for _, e in stamped if isinstance(e, Partial) and (e.committed or e.tentative)
        ),
        windows=after.windows - before.windows,
        gated=after.gated_windows - before.gated_windows,
        model_s=after.compute_seconds - before.compute_seconds,
        cpu_s=cpu,
        vad_cpu_s=vad_cpu,
        audio_s=len(audio) / RATE,
    )


def endpoint_latencies(run: Run, ends: list[int]) -> list[float]:
    """For each sentence end, stream seconds until the first Final emitted after it that covers it."""
    out = []
    for end in ends:
        t_end = end / RATE
        later = [t for t, f in run.finals if f.end >= t_end - 0.5 and t >= t_end]
        if later:
            out.append(min(later) - t_end)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sentences", type=int, default=12, help="sentences in the half-silence stream")
    p.add_argument("--noise-minutes", type=float, default=10.0, help="non-speech streamed through silero")
    p.add_argument(
        "--compare-minutes",
        type=float,
        default=1.0,
        help="the first minutes of it also through the energy gate and no gate (the model runs on them)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args()

    engines = {g: RecognitionEngine(settings_for(g, args.threads)) for g in GATES}
    for g, e in engines.items():
        print(f"gate {g}: engine gate {e.vad}, floor {e.settings.endpoint.energy_gate_dbfs} dBFS")
    rng = np.random.default_rng(0)
    clips = sentences(args.sentences)
    gaps = {
        "quiet gaps (-70 dBFS)": lambda n: at_dbfs(rng.standard_normal(n), -70),
        "noisy gaps (pink -40 dBFS)": lambda n: at_dbfs(pink(n, rng), -40),
    }
    print(f"\n1+2. {args.sentences} sentences, each followed by as long a gap; 20 ms packets, sync path")
    print(
        f"{'gaps':<27} {'gate':<7} {'audio s':>7} {'windows':>7} {'gated':>6} {'model s':>8} {'vs none':>7} "
        f"{'vad cpu s':>9} {'cpu/audio s':>11} {'finals':>6} {'endpoint p50/p95/max s':>22}"
    )
    for label, gap in gaps.items():
        audio, ends = half_silence(clips, gap)
        runs = {g: stream(engines[g], audio) for g in GATES}
        for g, r in runs.items():
            lat = endpoint_latencies(r, ends)
            print(
                f"{label:<27} {g:<7} {r.audio_s:>7.1f} {r.windows:>7} {r.gated:>6} {r.model_s:>8.2f} "
                f"{r.model_s / runs['none'].model_s:>6.2f}x {r.vad_cpu_s:>9.2f} {r.cpu_s / r.audio_s:>11.3f} "
                f"{len(r.finals):>6} {pct(lat, 50):>8.2f}/{pct(lat, 95):.2f}/{max(lat, default=float('nan')):.2f}"
                f" ({len(lat)}/{len(ends)})"
            )
    noise = mixed_noise(args.noise_minutes * 60)
    print("\n3. mixed non-speech, 100 ms packets, sync path")
    print(
        f"{'gate':<7} {'minutes':>7} {'partials with text':>18} {'finals with text':>16} {'words':>6} "
        f"{'windows':>7} {'model s':>8} {'vad cpu s':>9} {'cpu/audio s':>11}"
    )
    for g in GATES:
        audio = noise if g == "silero" else noise[: int(args.compare_minutes * 60 * RATE)]
        r = stream(engines[g], audio, packet=1600)
        words = sum(len(f.text.split()) for _, f in r.finals)
        print(
            f"{g:<7} {r.audio_s / 60:>7.1f} {r.partials_with_text:>18} {len(r.finals):>16} {words:>6} "
            f"{r.windows:>7} {r.model_s:>8.2f} {r.vad_cpu_s:>9.2f} {r.cpu_s / r.audio_s:>11.4f}"
        )
    print("\ncpu/audio s = whole-process CPU seconds per second of audio: the fraction of one core it takes")


if __name__ == "__main__":
    main()
