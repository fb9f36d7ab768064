"""One audio stream of the engine, in three parts with one job each:

- :class:`AudioIntake` (client side): decodes and resamples what the client sends, admits it into the
  ring buffer under the overload policy, feeds the speech gate, and notes when each chunk arrived;
- :class:`WindowQueue`: cuts the buffered audio into model windows (``windowing.Chunker``) and holds
  them until the scheduler takes them;
- ``transcript.TranscriptBuilder`` (worker side): merges the model output into Partials and Finals.

:class:`RecognitionStream` ties them together under one lock, tells the worker about overloads through
typed notices, and knows when all the work its audio allows is done (:meth:`RecognitionStream.when_idle`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Protocol

import numpy as np

from streamer.config import Settings
from streamer.ctc_merge import Vocabulary
from streamer.events import Event, StreamError
from streamer.finals import FinalDecoder
from streamer.grammar import DecodingOptions
from streamer.latency import ArrivalTimes
from streamer.pcm import MODEL_SAMPLE_RATE, PcmDecoder
from streamer.ring_buffer import RingBuffer
from streamer.scheduler import BatchScheduler, FeatureCache
from streamer.stats import EngineCounters
from streamer.transcript import TranscriptBuilder
from streamer.vad import GateSettings, SpeechGate, make_gate
from streamer.windowing import Chunker, FrameGeometry, Window, WindowLayout

log = logging.getLogger(__name__)


# -- notices: what the client side tells the worker, in order -------------------------------------


@dataclasses.dataclass(frozen=True)
class OverloadDrop:
    """drop_oldest overload: the queued audio was dropped; segment ``generation`` starts at ``origin``."""

    generation: int
    origin: int  # absolute sample index
    dropped_s: float


@dataclasses.dataclass(frozen=True)
class OverloadClose:
    """close overload: the stream ends with a fatal error."""

    message: str


Notice = OverloadDrop | OverloadClose


# -- windows ---------------------------------------------------------------------------------------


class WindowQueue:
    """The stream's windows: made from the ring buffer as their audio arrives, held for the scheduler.

    Catch-up: when the worker comes for windows at least one chunk late (the next window's audio has
    been waiting that long), that window may own up to ``max_chunks`` chunks (``Chunker.next_window``).
    Lateness, not the amount of audio waiting, is the trigger: a client sending large packets to a
    worker that keeps up still gets one window per chunk.
    """

    def __init__(self, chunker: Chunker, max_chunks: int = 1) -> None:
        self.chunker = chunker
        self.max_chunks = max(1, int(max_chunks))
        layout = chunker.layout
        self.late_s = layout.chunk / MODEL_SAMPLE_RATE  # how late the worker is when catch-up engages
        self.pending: list[Window] = []

    @property
    def idle(self) -> bool:
        """Nothing to hand to the model: no window is waiting and none can be made now."""
        return not self.pending and self.chunker.idle

    def fill(self, arrival_of: Callable[[int], float], catch_up: bool = False) -> None:
        """Make every window whose audio is here; ``arrival_of(sample)`` stamps its newest sample.
        ``catch_up``: windows may own several chunks while the worker is late (the live engine)."""
        while True:
            chunks = self.max_chunks if catch_up and self._late(arrival_of) else 1
            w = self.chunker.next_window(chunks)
            if w is None:
                return
            w.arrival = arrival_of(w.end)
            self.pending.append(w)

    def _late(self, arrival_of: Callable[[int], float]) -> bool:
        """Has the audio that completes the next plain window been waiting for ``late_s`` or more?"""
        if self.max_chunks == 1:
            return False
        ready_at = arrival_of(self.chunker.next_plain_end)  # now when it has not arrived yet
        return time.monotonic() - ready_at >= self.late_s

    def take(self, aligned: int | None) -> list[Window]:
        """The windows for the next model round. ``aligned``: only whole blocks of that many window
        numbers (the synchronous path's batch composition), unless the stream ends."""
        if aligned is None or (self.pending and self.pending[-1].eos):
            out, self.pending = self.pending, []
            return out
        if not self.pending:
            return []
        limit = (self.pending[-1].seq + 1) // aligned * aligned
        out = [w for w in self.pending if w.seq < limit]
        self.pending = self.pending[len(out) :]
        return out

    def drop_before(self, generation: int) -> None:
        """Forget the windows of segments before ``generation`` (dropped by the overload policy)."""
        self.pending = [w for w in self.pending if w.generation >= generation]

    def clear(self) -> None:
        self.pending = []


# -- buffering and admission -----------------------------------------------------------------------


class AudioIntake:
    """Client side of a stream: audio in, admitted into the ring buffer (or dropped by the overload
    policy), speech gate fed, arrival noted. Not thread-safe by itself: the stream's lock guards it."""

    def __init__(
        self,
        decoder: PcmDecoder,
        buffer: RingBuffer,
        windows: WindowQueue,
        speech_gate: SpeechGate | None,
        *,
        max_queued: int,
        overload_policy: str,
    ) -> None:
        self.decoder = decoder
        self.buffer = buffer
        self.windows = windows
        self.speech_gate = speech_gate
        self.max_queued = max_queued  # samples waiting for a window, at most
        self.overload_policy = overload_policy  # "drop_oldest" | "close"
        self.arrivals = ArrivalTimes()  # by absolute sample index

    @property
    def queued_samples(self) -> int:
        """Samples received but not yet part of a window's owned chunk."""
        return self.windows.chunker.queued_samples

    def push(self, data: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, Notice | None]:
        """Decode and admit one chunk: (samples decoded, the overload notice it caused, if any)."""
        samples = self.decoder.push(data)
        notice = self.admit(samples) if samples.size else None
        return len(samples), notice

    def flush(self) -> Notice | None:
        """Admit what the resampler still holds (end of stream)."""
        tail = self.decoder.flush()
        return self.admit(tail) if tail.size else None

    def admit(self, samples: np.ndarray) -> Notice | None:
        now = time.monotonic()
        buf = self.buffer
        notice: Notice | None = None
        if len(samples) > buf.free or self.queued_samples + len(samples) > self.max_queued:
            if self.overload_policy == "close":
                return OverloadClose("the recognizer fell behind; closing the stream")
            # drop_oldest: abandon everything waiting and continue with the newest audio.
            keep = min(len(samples), buf.capacity // 2, max(self.max_queued // 2, 1))
            dropped = self.queued_samples + len(samples) - keep
            buf.skip_to(buf.end)
            chunker = self.windows.chunker
            chunker.restart_at(buf.end)
            if self.speech_gate is not None:
                self.speech_gate.restart(buf.end)
            samples = samples[len(samples) - keep :]
            notice = OverloadDrop(chunker.generation, buf.end, dropped / MODEL_SAMPLE_RATE)
        buf.append(samples)
        if self.speech_gate is not None:  # the VAD runs here, as audio arrives, and costs no model time
            self.speech_gate.feed(samples)
        self.arrivals.note(buf.end, now)
        return notice

    def arrival_of(self, index: int) -> float:
        """When the sample at absolute ``index`` arrived (now, if that is no longer known)."""
        arrived = self.arrivals.of(index)
        return time.monotonic() if arrived is None else arrived


# -- the stream ------------------------------------------------------------------------------------


class StreamHost(Protocol):
    """What a stream uses of its engine (``engine.RecognitionEngine``)."""

    settings: Settings
    geometry: FrameGeometry
    layout: WindowLayout
    vad: str  # the speech gate: "silero" | "energy"
    gate_settings: GateSettings
    cache_features: bool
    vocab: Vocabulary
    finals: FinalDecoder
    counters: EngineCounters
    scheduler: BatchScheduler

    def release(self, stream: RecognitionStream) -> None:
        """``stream`` is done: forget it."""
        ...


class RecognitionStream:
    """One audio stream. Create with :meth:`RecognitionEngine.open_stream`.

    ``accept``/``reset``/``end``/``close``/``configure`` may be called from any thread; ``has_ready``/
    ``take_windows``/``consume``/``fail`` are the scheduler's (``scheduler.StreamWork``).
    """

    def __init__(
        self,
        engine: StreamHost,
        on_event: Callable[[Event], None],
        *,
        sample_rate: int,
        encoding: str,
        partials: bool,
        words: bool,
        decoding: DecodingOptions | None = None,
    ) -> None:
        s = engine.settings
        self.id = uuid.uuid4().hex[:16]
        self.engine = engine
        self.partials = partials
        self.words = words
        self._on_event = on_event
        self._lock = threading.Lock()
        buffer = RingBuffer(max(int(s.streaming.buffer_s * MODEL_SAMPLE_RATE), engine.layout.window * 2))
        gate = s.endpoint.energy_gate_dbfs
        speech_gate = make_gate(engine.vad, engine.gate_settings)
        chunker = Chunker(
            engine.geometry,
            engine.layout,
            buffer,
            normalization=s.streaming.normalization,
            energy_gate_dbfs=None if gate is None or math.isinf(gate) else gate,
            cache_features=engine.cache_features,
            speech_gate=speech_gate,
        )
        self.windows = WindowQueue(chunker, s.streaming.max_chunks_per_window)
        self.intake = AudioIntake(
            PcmDecoder(sample_rate, encoding),
            buffer,
            self.windows,
            speech_gate,
            max_queued=int(s.limits.max_queued_s * MODEL_SAMPLE_RATE),
            overload_policy=s.limits.overload_policy,
        )
        self.transcript = TranscriptBuilder(
            self.id,
            s,
            engine.vocab,
            engine.geometry,
            engine.finals,
            partials=partials,
            words=words,
            decoding=decoding,
        )
        self.features = FeatureCache()
        self._notices: list[Notice] = []  # for the worker, from the client side
        self._in_flight = 0  # windows (and notice batches) the worker took whose events are not out yet
        self._idle_waiters: list[Future[None]] = []
        self._ended = False
        self._closing = False  # a fatal overload is pending: drop audio until the worker closes us
        self._closed = False
        self.done = threading.Event()  # set after EndOfStream, a fatal error or close()

    # -- client side (any thread) ------------------------------------------------------------------

    def accept(self, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Queue audio (thread-safe, non-blocking). Raises AudioFormatError on malformed audio."""
        if self._closed or self._closing:
            return
        if self._ended:
            raise RuntimeError(f"stream {self.id} has ended; no more audio can be accepted")
        with self._lock:
            count, notice = self.intake.push(data)
            self._notice(notice)
        self.engine.counters.audio_in(count)
        self.engine.scheduler.notify()

    def reset(self) -> None:
        """End the current utterance at the audio received so far (its Final follows)."""
        with self._lock:
            if self._closed or self._ended:
                return
            self.windows.chunker.close_segment()
        self.engine.scheduler.notify()

    def end(self) -> None:
        """No more audio: the remaining Final(s), then EndOfStream, follow."""
        with self._lock:
            if self._closed or self._ended:
                return
            self._ended = True
            self._notice(self.intake.flush())
            self.windows.chunker.close_segment(eos=True)
        self.engine.scheduler.notify()

    def close(self) -> None:
        """Abandon the stream: free its buffers; no more events."""
        with self._lock:
            self._closed = True
            self.windows.clear()
            self.intake.arrivals.clear()
            self.features = FeatureCache()
        self._finished()

    def configure(self, decoding: DecodingOptions) -> None:
        """Decode with ``decoding`` from the next utterance on: the first one that starts after the audio
        accepted so far (an utterance open at that point keeps its options)."""
        with self._lock:
            self.transcript.configure(self.intake.buffer.end, decoding)

    @property
    def decoding(self) -> DecodingOptions:
        return self.transcript.decoding

    @property
    def closed(self) -> bool:
        return self._closed

    def queued_seconds(self) -> float:
        return max(0, self.intake.queued_samples) / MODEL_SAMPLE_RATE

    def _notice(self, notice: Notice | None) -> None:
        if notice is None:
            return
        self._notices.append(notice)
        if isinstance(notice, OverloadClose):
            self._closing = True
        else:
            self.engine.counters.overload()

    # -- progress (any thread) ---------------------------------------------------------------------

    def is_idle(self) -> bool:
        """Has the engine handed out every event the audio accepted so far allows?

        True when no window or notice of this stream waits for the model and none the worker took is
        still being processed. Audio short of a full window does not count: it waits for more audio (or
        ``end``/``reset``), not for the engine. The vosk endpoint answers each frame once this holds.
        """
        with self._lock:
            return self._idle_locked()

    def when_idle(self) -> Future[None]:
        """A future resolved once :meth:`is_idle` holds (already resolved when it holds now).

        It resolves after the events that led there were handed to ``on_event``: a transport that
        forwards events and the resolution through the same queue (asyncio.wrap_future and
        call_soon_threadsafe) sees the events first.
        """
        future: Future[None] = Future()
        with self._lock:
            if not self._idle_locked():
                self._idle_waiters.append(future)
                return future
        future.set_running_or_notify_cancel()
        future.set_result(None)
        return future

    def _idle_locked(self) -> bool:
        if self._closed:
            return True
        return not (self._notices or self._in_flight) and self.windows.idle

    def _work_done(self, units: int) -> None:
        """The worker handed out the events of ``units`` taken windows (or notice batches)."""
        with self._lock:
            self._in_flight -= units
        self._wake_if_idle()

    def _wake_if_idle(self) -> None:
        with self._lock:
            if not self._idle_waiters or not self._idle_locked():
                return
            waiters, self._idle_waiters = self._idle_waiters, []
        for future in waiters:
            if future.set_running_or_notify_cancel():  # False: the waiter gave up (cancelled)
                future.set_result(None)

    # -- worker side (scheduler.StreamWork) --------------------------------------------------------

    def has_ready(self) -> bool:
        if self._closed:
            return False
        return bool(self._notices) or not self.windows.idle

    def take_windows(self, aligned: int | None) -> list[Window]:
        events: list[Event] = []
        transcript = self.transcript
        with self._lock:
            if self._closed:
                return []
            notices, self._notices = self._notices, []
            for notice in notices:
                events.extend(transcript.finish())
                if isinstance(notice, OverloadClose):
                    events.append(StreamError(self.id, "overload", notice.message, fatal=True))
                    self._closed = True
                else:
                    message = f"the recognizer fell behind; dropped {notice.dropped_s:.1f} s of audio"
                    events.append(StreamError(self.id, "overload", message, fatal=False))
                    transcript.start_segment(notice.generation, notice.origin)
                    self.windows.drop_before(notice.generation)
            out: list[Window] = []
            if not self._closed:
                self.windows.fill(self.intake.arrival_of, catch_up=aligned is None)
                out = self.windows.take(aligned)
            self._in_flight += len(out) + 1  # + the notices' events, out below
        self._emit_all(events)
        if self._closed:
            self._finished()
        self._work_done(1)
        return out

    def consume(self, window: Window, log_probs: np.ndarray | None) -> None:
        """Merge a window's model output (None: gated or empty) and hand out the events it makes."""
        try:
            if self._closed or self.transcript.is_stale(window):
                return
            events = self.transcript.window(window, log_probs)
            if log_probs is not None:
                self.engine.counters.latency(time.monotonic() - window.arrival)
            self._emit_all(events)
            if window.eos:
                self._finished()
        finally:
            self._work_done(1)

    def fail(self, code: str, message: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._emit_all([StreamError(self.id, code, message, fatal=True)])
        self._finished()

    def _finished(self) -> None:
        """No more events: the engine forgets the stream, waiters wake."""
        self.engine.release(self)
        self.done.set()
        self._wake_if_idle()

    def _emit_all(self, events: Iterable[Event]) -> None:
        for event in events:
            try:
                self._on_event(event)
            except Exception:
                log.exception("on_event callback of stream %s raised (ignored)", self.id)
