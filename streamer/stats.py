"""What the engine counts, and the snapshot of it that ``RecognitionEngine.stats`` returns."""

from __future__ import annotations

import dataclasses
from collections import deque

LATENCY_SAMPLES = 2048  # recent window latencies kept


@dataclasses.dataclass(frozen=True)
class EngineStats:
    active_streams: int
    audio_seconds: float  # audio accepted (16 kHz seconds) since start
    compute_seconds: float  # wall time spent in model forwards
    batches: int
    windows: int  # windows run through the model
    gated_windows: int  # windows skipped by the speech (or energy) gate
    queue_depth: int  # streams with a window waiting for the model
    queued_audio_seconds: float  # audio received but not yet windowed, all streams
    overloads: int
    errors: int
    latency_samples: tuple[float, ...]  # recent seconds from a window's newest sample arriving to its events


class EngineCounters:
    """What the streams count for :meth:`RecognitionEngine.stats` (any thread; ints and a bounded deque)."""

    def __init__(self) -> None:
        self.audio_samples = 0  # accepted, at 16 kHz
        self.overloads = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def audio_in(self, samples: int) -> None:
        self.audio_samples += samples

    def overload(self) -> None:
        self.overloads += 1

    def latency(self, seconds: float) -> None:
        """A window's events are out ``seconds`` after its newest sample arrived."""
        self.latencies.append(seconds)
