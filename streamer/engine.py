"""Transport-free streaming recognition: the API the daemon, mic mode and file mode use.

Data path, top to bottom (each stage only talks to the next one):

    accept(bytes|array) -> pcm.PcmDecoder        validate, decode, resample to 16 kHz
                        -> ring_buffer.RingBuffer bounded per-stream samples
                        -> windowing.Chunker      [left | chunk | look-ahead] windows on the frame grid,
                                                  normalization, speech gate (vad.SpeechGate, fed on
                                                  arrival) or energy gate
                        -> scheduler.BatchScheduler one worker thread, cross-stream batches
                        -> ctc_merge.CtcMerger    seam-exact CTC collapse, endpointing, words
                        -> on_event(Partial | Final | StreamError | EndOfStream)

Threading: ``accept``/``reset``/``end``/``close`` may be called from any thread and never block on the
model; ``on_event`` is always called from the inference worker (or, in :meth:`transcribe_stream` without
a started worker, from the calling thread).

Normalization and defaults, by measurement (``bench/plot_streaming.py --threads 1``: CPU seconds with
one intra-op thread and passive OpenMP waits, because wall time on the shared 2-core machine mostly
measured the neighbours; 62 s of synthesized speech; session 1's en-small architecture with the 7-layer
front end; the shipped 3-layer one measures 1.47x at the default layout, docs/streaming_tradeoffs.png):

    layout (left/chunk/look-ahead s)   normalization   compute vs one offline forward
    2.0 / 0.5 / 0.5                    window          2.93x
    2.0 / 0.5 / 0.5                    running         2.30x   (feature encoder runs once per sample)
    1.0 / 0.5 / 0.5  (default)         running         1.53x
    1.0 / 0.5 / 0.3                    running         1.39x
    0.5 / 0.5 / 0.3                    running         1.01x
    1.0 / 0.8 / 0.4                    running         1.24x

``running`` (mean/variance of everything the stream has sent so far) is the default: it stays closer to
the offline transcript than per-window statistics in every pair measured (CER of streamed vs offline
text, same layout: 23.5% vs 37.7% with random en-small weights at 2/0.5/0.5; 7.5% vs 9.8% and 5.5% vs
6.3% with the step-1200 training checkpoint at 2/0.5/0.5 and 1/0.5/0.3: a window that is mostly pause
gets blown up to unit variance, the running estimate converges to the whole-utterance statistics the
model was trained with), and it is what makes the feature-encoder cache valid. The chunk (0.5 s) bounds
partial latency (a sample waits at most one chunk for its window); look-ahead costs compute but no
partial latency (look-ahead text is shown as ``tentative`` at once), so it gets the larger share.

Overload: audio waiting for the model is bounded by ``limits.max_queued_s`` (and the ring buffer by
``streaming.buffer_s``). Past that, ``overload_policy="drop_oldest"`` closes the open utterance, drops the
queued audio, emits ``StreamError(code="overload", fatal=False)`` and carries on with the newest audio;
``"close"`` emits a fatal ``StreamError(code="overload")`` and closes the stream.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any

import numpy as np

from streamer.backend import backend_for
from streamer.config import ModelSettings, Settings, StreamingSettings
from streamer.ctc_merge import CtcMerger, Utterance, Vocabulary
from streamer.endpointing import Endpointer
from streamer.events import Alternative, EndOfStream, Event, Final, Partial, StreamError, Word
from streamer.grammar import (
    DecodingOptions,
    Grammar,
    GrammarError,
    GrammarSearch,
    align_words,
    check_hotwords,
    check_max_alternatives,
    check_phrases,
)
from streamer.offline import offline_windows
from streamer.pcm import MODEL_SAMPLE_RATE, AudioFormatError, PcmDecoder, check_encoding, check_sample_rate
from streamer.ring_buffer import RingBuffer
from streamer.scheduler import BatchScheduler, FeatureCache
from streamer.vad import GateSettings, make_gate, resolve_vad
from streamer.windowing import NORMALIZATION_EPSILON, Chunker, FrameGeometry, Window, WindowLayout

__all__ = ["AudioFormatError", "EngineStats", "RecognitionEngine", "RecognitionStream", "load_model"]

log = logging.getLogger(__name__)
LATENCY_SAMPLES = 2048
GRAMMAR_CACHE = 32  # compiled grammars kept for reuse


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


# -- model loading ---------------------------------------------------------------------------------


def _default_model_dir() -> Path:
    from model import default_model_dir  # type: ignore[attr-defined]

    return Path(default_model_dir())


def load_model(settings: Settings) -> tuple[Any, Any, Any, str]:
    """(model, tokenizer, config, name) for ``settings.model``; quantized/cast/moved as configured."""
    import torch

    ms = settings.model
    path = Path(ms.path) if ms.path else _default_model_dir()
    if ms.threads > 0:
        torch.set_num_threads(ms.threads)
    from model import Wav2Vec2ConformerForCTC, Wav2Vec2CTCTokenizer, quantize_dynamic_int8

    dtype = model_dtype(ms)
    # Loaded in its run dtype on the CPU so that the dense layers are packed for it once (model.cpu_fast_path).
    on_cpu = torch.device(ms.device).type == "cpu"
    load_dtype = getattr(torch, dtype) if on_cpu and not ms.quantize else None
    if ms.quantize:
        if ms.quantize != "int8":
            raise ValueError(f"model.quantize must be 'int8' or unset, got {ms.quantize!r}")
        if ms.device != "cpu":
            raise ValueError("int8 dynamic quantization runs on the CPU only")
    # int8: pack only the layers left in float, after quantizing (no transient packed copy of the rest)
    route = "aten" if ms.quantize else "auto"
    model = Wav2Vec2ConformerForCTC.from_pretrained(str(path), dtype=load_dtype, linear_route=route).eval()
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(path))
    if ms.quantize:
        from model.cpu_fast_path import route_linears

        model = quantize_dynamic_int8(model, inplace=True)
        route_linears(model, "auto")
    model = model.to(ms.device)
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    log.info("model %s on %s: %s%s", path.name, ms.device, dtype, " + int8 dynamic" if ms.quantize else "")
    return model, tokenizer, model.config, path.name


def model_dtype(ms: ModelSettings) -> str:
    """``model.dtype`` with "auto" resolved (bf16 on CPUs with bf16 hardware; float32 under int8)."""
    from model.quantize import resolve_dtype

    if ms.dtype == "auto" and ms.quantize:
        return "float32"  # the int8 layers quantize float32 activations; the float edges stay float32
    return resolve_dtype(ms.dtype, ms.device)


# -- streams ---------------------------------------------------------------------------------------


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


Notice = OverloadDrop | OverloadClose  # what the client side tells the worker, in order


class RecognitionStream:
    """One audio stream. Create with :meth:`RecognitionEngine.open_stream`."""

    def __init__(
        self,
        engine: RecognitionEngine,
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
        self._decoder = PcmDecoder(sample_rate, encoding)
        self._buffer = RingBuffer(
            max(int(s.streaming.buffer_s * MODEL_SAMPLE_RATE), engine.layout.window * 2)
        )
        gate = s.endpoint.energy_gate_dbfs
        self._speech_gate = make_gate(engine.vad, engine.gate_settings)
        self._chunker = Chunker(
            engine.geometry,
            engine.layout,
            self._buffer,
            normalization=s.streaming.normalization,
            energy_gate_dbfs=None if gate is None or math.isinf(gate) else gate,
            cache_features=engine.cache_features,
            speech_gate=self._speech_gate,
        )
        self.features = FeatureCache()
        frame_s = engine.geometry.stride / MODEL_SAMPLE_RATE
        self._merger = CtcMerger(
            engine.vocab,
            frame_seconds=frame_s,
            endpointer=Endpointer(s.endpoint.min_silence_s, s.endpoint.max_utterance_s, frame_s),
            keep_log_probs=engine.beam is not None,
        )
        self._decoding = DecodingOptions()
        # (sample position, options): from the first utterance that starts after that much audio
        self._next_decoding: tuple[int, DecodingOptions] | None = None if decoding is None else (0, decoding)
        self._grammar_search: tuple[int, GrammarSearch] | None = None  # (first frame, search) for partials
        self._adopt_decoding()
        self._max_queued = int(s.limits.max_queued_s * MODEL_SAMPLE_RATE)
        self._arrivals: deque[tuple[int, float]] = deque()
        self._pending: list[Window] = []
        self._notices: list[Notice] = []  # for the worker, from the client side
        self._in_flight = 0  # windows (and notice batches) the worker took whose events are not out yet
        self._idle_waiters: list[Future[None]] = []
        self._merge_generation = 0
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
            samples = self._decoder.push(data)
            if samples.size:
                self._append(samples)
        self.engine._audio_in(len(samples))
        self.engine.scheduler.notify()

    def reset(self) -> None:
        """End the current utterance at the audio received so far (its Final follows)."""
        with self._lock:
            if self._closed or self._ended:
                return
            self._chunker.close_segment()
        self.engine.scheduler.notify()

    def end(self) -> None:
        """No more audio: the remaining Final(s), then EndOfStream, follow."""
        with self._lock:
            if self._closed or self._ended:
                return
            self._ended = True
            tail = self._decoder.flush()
            if tail.size:
                self._append(tail)
            self._chunker.close_segment(eos=True)
        self.engine.scheduler.notify()

    def close(self) -> None:
        """Abandon the stream: free its buffers; no more events."""
        with self._lock:
            self._closed = True
            self._pending = []
            self._arrivals.clear()
            self.features = FeatureCache()
        self.engine._forget(self)
        self.done.set()
        self._wake_if_idle()

    def configure(self, decoding: DecodingOptions) -> None:
        """Decode with ``decoding`` from the next utterance on: the first one that starts after the audio
        accepted so far (an utterance open at that point keeps its options)."""
        with self._lock:
            self._next_decoding = (self._buffer.end, decoding)

    @property
    def decoding(self) -> DecodingOptions:
        return self._decoding

    def _adopt_decoding(self) -> None:
        """Between utterances (worker side): switch to the options sent by `configure` once the audio
        merged so far reaches the point where they were sent."""
        pending = self._next_decoding
        if pending is None:
            return
        merger = self._merger
        merged_to = (
            round(merger.time_offset * MODEL_SAMPLE_RATE) + merger.next_frame * self.engine.geometry.stride
        )
        if merged_to < pending[0]:
            return
        self._next_decoding = None
        self._decoding = decoding = pending[1]
        self._grammar_search = None
        merger.keep_log_probs = self.engine.beam is not None or decoding.keeps_frames
        merger.close_gate = self._phrase_may_end if decoding.grammar is not None else None

    @property
    def closed(self) -> bool:
        return self._closed

    def is_idle(self) -> bool:
        """Has the engine handed out every event the audio accepted so far allows? (any thread)

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
        return not (self._notices or self._pending or self._in_flight) and self._chunker.idle

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

    def _append(self, samples: np.ndarray) -> None:
        now = time.monotonic()
        buf = self._buffer
        if len(samples) > buf.free or self._chunker.queued_samples + len(samples) > self._max_queued:
            if self.engine.settings.limits.overload_policy == "close":
                self._notices.append(OverloadClose("the recognizer fell behind; closing the stream"))
                self._closing = True
                return
            # drop_oldest: abandon everything waiting and continue with the newest audio.
            keep = min(len(samples), buf.capacity // 2, max(self._max_queued // 2, 1))
            dropped = self._chunker.queued_samples + len(samples) - keep
            buf.skip_to(buf.end)
            self._chunker.restart_at(buf.end)
            if self._speech_gate is not None:
                self._speech_gate.restart(buf.end)
            samples = samples[len(samples) - keep :]
            self._notices.append(OverloadDrop(self._chunker.generation, buf.end, dropped / MODEL_SAMPLE_RATE))
            self.engine._overload()
        buf.append(samples)
        if self._speech_gate is not None:  # the VAD runs here, as audio arrives, and costs no model time
            self._speech_gate.feed(samples)
        self._arrivals.append((buf.end, now))

    def _arrival_of(self, index: int) -> float:
        arrivals = self._arrivals
        while len(arrivals) > 1 and arrivals[0][0] < index:
            arrivals.popleft()
        return arrivals[0][1] if arrivals else time.monotonic()

    # -- worker side -------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        if self._closed:
            return False
        return bool(self._notices) or bool(self._pending) or not self._chunker.idle

    def take_windows(self, aligned: int | None) -> list[Window]:
        events: list[Event] = []
        with self._lock:
            if self._closed:
                return []
            notices, self._notices = self._notices, []
            for notice in notices:
                events.extend(self._finish_utterance())
                if isinstance(notice, OverloadClose):
                    events.append(StreamError(self.id, "overload", notice.message, fatal=True))
                    self._closed = True
                else:
                    events.append(
                        StreamError(
                            self.id,
                            "overload",
                            f"the recognizer fell behind; dropped {notice.dropped_s:.1f} s of audio",
                            fatal=False,
                        )
                    )
                    self._merger.start_segment(notice.origin)
                    self._merge_generation = notice.generation
                    self._pending = [w for w in self._pending if w.generation >= notice.generation]
            if not self._closed:
                while (w := self._chunker.next_window()) is not None:
                    w.arrival = self._arrival_of(w.end)
                    self._pending.append(w)
                if aligned is None or (self._pending and self._pending[-1].eos):
                    out, self._pending = self._pending, []
                elif self._pending:
                    limit = (self._pending[-1].seq + 1) // aligned * aligned
                    out = [w for w in self._pending if w.seq < limit]
                    self._pending = self._pending[len(out) :]
                else:
                    out = []
            else:
                out = []
            self._in_flight += len(out) + 1  # + the notices' events, out below
        self._emit_all(events)
        if self._closed:
            self.engine._forget(self)
            self.done.set()
        self._work_done(1)
        return out

    def consume(self, window: Window, log_probs: np.ndarray | None) -> None:
        """Merge a window's model output (None: gated or empty) and hand out the events it makes."""
        try:
            self._consume(window, log_probs)
        finally:
            self._work_done(1)

    def _consume(self, window: Window, log_probs: np.ndarray | None) -> None:
        if self._closed:
            return
        merger = self._merger
        events: list[Event] = []
        if window.generation != self._merge_generation:
            if window.generation < self._merge_generation:
                return  # audio of a segment dropped by the overload policy
            events.extend(self._finish_utterance())
            merger.start_segment(window.origin)
            self._merge_generation = window.generation
        if self._next_decoding is not None and merger.utt_first_frame is None:
            self._adopt_decoding()  # (consume) an utterance starting in this window gets them
        owned = (
            None if log_probs is None else log_probs[window.owned_offset : window.owned_offset + window.owned]
        )
        for utterance in merger.push(owned, window.first_frame, window.owned):
            events.append(self._final(utterance))
        if window.final:
            events.extend(self._finish_utterance())
            if window.eos:
                events.append(EndOfStream(self.id))
        elif log_probs is not None and self.partials:
            lookahead = log_probs[window.owned_offset + window.owned :]
            committed, tentative, start = merger.partial(lookahead)
            if self._decoding.grammar is not None:
                committed, tentative = "", self._grammar_partial(self._decoding.grammar, lookahead)
            if committed or tentative:
                events.append(
                    Partial(self.id, committed, tentative, start, round(window.end / MODEL_SAMPLE_RATE, 3))
                )
        if log_probs is not None:
            self.engine._latency(time.monotonic() - window.arrival)
        self._emit_all(events)
        if window.eos:
            self.engine._forget(self)
            self.done.set()

    def fail(self, code: str, message: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._emit_all([StreamError(self.id, code, message, fatal=True)])
        self.engine._forget(self)
        self.done.set()
        self._wake_if_idle()

    def _finish_utterance(self) -> list[Event]:
        utterance = self._merger.finish()
        return [self._final(utterance)] if utterance is not None else []

    def _open_search(self, grammar: Grammar, end_frame: int | None = None) -> GrammarSearch | None:
        """The incremental grammar search of the open utterance, fed its frames up to ``end_frame``
        (segment frame; None: all merged), or None when no utterance is open."""
        opened = self._merger.open_frames()
        if opened is None:
            return None
        first, frames = opened
        if self._grammar_search is None or self._grammar_search[0] != first:
            self._grammar_search = (first, grammar.search())
        search = self._grammar_search[1]
        upto = len(frames) if end_frame is None else max(end_frame - first, 0)
        if upto > search.frames:
            search.advance(frames[search.frames : upto])
        return search

    def _phrase_may_end(self, end_frame: int) -> bool:
        """Endpointing under a grammar: a pause inside a phrase does not end the utterance. It ends when
        the best reading so far is a whole phrase, or nothing, or fits no phrase (garbage beats it)."""
        grammar = self._decoding.grammar
        search = None if grammar is None else self._open_search(grammar, end_frame)
        return search is None or search.may_end()

    def _grammar_partial(self, grammar: Grammar, lookahead: np.ndarray) -> str:
        """The best prefix of the grammar over the open utterance's frames and the look-ahead, searched
        incrementally (the frames merged so far are fed once; the look-ahead goes to a copy)."""
        search = self._open_search(grammar)
        if search is None:
            return ""
        ahead = search.copy()
        ahead.advance(lookahead)
        return ahead.best_prefix()

    def _final(self, utterance: Utterance) -> Final:
        final = self.engine._decode_utterance(self.id, utterance, self._decoding, self.words)
        self._grammar_search = None
        self._adopt_decoding()
        return final

    def _emit_all(self, events: Iterable[Event]) -> None:
        for event in events:
            try:
                self._on_event(event)
            except Exception:
                log.exception("on_event callback of stream %s raised (ignored)", self.id)

    def queued_seconds(self) -> float:
        return max(0, self._chunker.queued_samples) / MODEL_SAMPLE_RATE


# -- engine ----------------------------------------------------------------------------------------


class RecognitionEngine:
    """Loads the model once and serves any number of streams from one inference worker."""

    def __init__(self, settings: Settings | None = None, *, model: Any = None, tokenizer: Any = None) -> None:
        self.settings = settings = settings or Settings()
        if model is None:
            model, loaded_tokenizer, config, self.model_name = load_model(settings)
            tokenizer = tokenizer or loaded_tokenizer
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer together with an explicit model")
            config = model.config
            self.model_name = getattr(config, "name_or_path", "") or type(model).__name__
            self.model_name = Path(self.model_name).name or self.model_name
        self.model = model
        self.config = config
        self.tokenizer = tokenizer
        self.vocab = Vocabulary.from_tokenizer(tokenizer)
        self.geometry = FrameGeometry.from_config(config)
        st = settings.streaming
        self.backend = backend_for(model, settings.model.device, model_dtype(settings.model))
        self.set_streaming(st)
        b = settings.batching
        self.scheduler = BatchScheduler(
            self.backend,
            max_batch=b.max_batch,
            max_wait_ms=b.max_wait_ms,
            heap_trim_s=settings.limits.heap_trim_s,
        )
        self.beam = self._load_beam(settings)
        self._plain_beam: Any = None  # hotwords without the beam search: a plain one, built on demand
        self._grammars: OrderedDict[tuple[str, ...], Grammar] = OrderedDict()
        self._lock = threading.Lock()
        self._streams: dict[str, RecognitionStream] = {}
        self._audio_samples = 0
        self._overloads = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def set_streaming(self, streaming: StreamingSettings) -> None:
        """Window layout, normalization and speech gate for streams opened from now on (benchmarks sweep
        these)."""
        self.settings.streaming = streaming
        self.gate_settings = GateSettings.from_settings(self.settings)  # validates the vad_* options
        self.vad = resolve_vad(streaming.vad)  # the speech gate streams get: "silero" | "energy"
        self.layout = WindowLayout.from_seconds(
            self.geometry, streaming.left_context_s, streaming.chunk_s, streaming.lookahead_s
        )
        # Reuse feature-encoder frames across overlapping windows when they are window-independent.
        self.cache_features = (
            streaming.cache_features
            and streaming.normalization == "running"
            and getattr(self.config, "feat_extract_norm", "group") == "layer"
            and self.backend.can_split
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.scheduler.start()

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        if drain and self.scheduler.running:
            with self._lock:
                streams = list(self._streams.values())
            for stream in streams:
                stream.reset()
            wait_futures([stream.when_idle() for stream in streams], timeout)
        self.scheduler.stop(timeout)

    def __enter__(self) -> RecognitionEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- streams -----------------------------------------------------------------------------------

    def open_stream(
        self,
        on_event: Callable[[Event], None],
        *,
        sample_rate: int = MODEL_SAMPLE_RATE,
        encoding: str = "pcm_s16le",
        partials: bool = True,
        words: bool = True,
        decoding: DecodingOptions | None = None,
    ) -> RecognitionStream:
        check_sample_rate(sample_rate)
        check_encoding(encoding)
        stream = RecognitionStream(
            self,
            on_event,
            sample_rate=sample_rate,
            encoding=encoding,
            partials=partials,
            words=words,
            decoding=decoding,
        )
        with self._lock:
            self._streams[stream.id] = stream
        self.scheduler.add(stream.id, stream)
        return stream

    def _forget(self, stream: RecognitionStream) -> None:
        with self._lock:
            self._streams.pop(stream.id, None)
        self.scheduler.remove(stream.id)

    # -- stats -------------------------------------------------------------------------------------

    def _audio_in(self, samples: int) -> None:
        self._audio_samples += samples

    def _overload(self) -> None:
        self._overloads += 1

    def _latency(self, seconds: float) -> None:
        self._latencies.append(seconds)

    def stats(self) -> EngineStats:
        with self._lock:
            streams = list(self._streams.values())
        s = self.scheduler.stats
        return EngineStats(
            active_streams=len(streams),
            audio_seconds=self._audio_samples / MODEL_SAMPLE_RATE,
            compute_seconds=s.compute_seconds,
            batches=s.batches,
            windows=s.windows,
            gated_windows=s.gated_windows,
            queue_depth=sum(1 for st in streams if st.has_ready()),
            queued_audio_seconds=sum(st.queued_seconds() for st in streams),
            overloads=self._overloads,
            errors=s.errors,
            latency_samples=tuple(self._latencies),
        )

    # -- decoding ----------------------------------------------------------------------------------

    def _load_beam(self, settings: Settings) -> Any:
        from streamer.beam import load_beam_search, make_beam_decoder

        return load_beam_search(
            settings.decoder.method,
            settings.decoder.lm_path,
            self.settings.model.path,
            lambda lm_path: make_beam_decoder(settings.decoder, self.vocab, lm_path),
            what="finals decoder",
        )

    def _beam_decode(self, utterance: Utterance, hotwords: tuple = ()) -> tuple[str, tuple[Word, ...]]:
        beam = self.beam if self.beam is not None else self._hotword_beam()
        frame_s = self.geometry.stride / MODEL_SAMPLE_RATE
        if hotwords:
            return beam.decode_utterance(utterance, frame_s, hotwords=hotwords)
        return beam.decode_utterance(utterance, frame_s)

    def _hotword_beam(self) -> Any:
        """A beam search without LM for hotwords when the finals are greedy (built once)."""
        with self._lock:
            if self._plain_beam is None:
                from streamer.beam import make_beam_decoder

                try:
                    self._plain_beam = make_beam_decoder(self.settings.decoder, self.vocab, None)
                except RuntimeError as exc:
                    raise GrammarError(f"hotwords need the beam search: {exc}") from None
            return self._plain_beam

    def decoding_options(
        self,
        grammar: object = None,
        hotwords: object = None,
        max_alternatives: object = 0,
    ) -> DecodingOptions:
        """Validated per-stream decoding options (GrammarError, a ValueError, for bad input): ``grammar``
        a list of phrases or None, ``hotwords`` ``[{"phrase": ..., "boost": ...}]`` or Hotword objects."""
        compiled = None
        if grammar is not None:
            compiled = self.compile_grammar(check_phrases(grammar))
        boosted = check_hotwords(hotwords, self.vocab) if hotwords is not None else ()
        if boosted and self.beam is None:
            self._hotword_beam()  # fails now, with a clear message, when there is no beam search
        return DecodingOptions(compiled, boosted, check_max_alternatives(max_alternatives))

    def compile_grammar(self, phrases: Sequence[str]) -> Grammar:
        """The prefix tree of ``phrases`` (cached: clients tend to send the same list every time)."""
        key = tuple(phrases)
        with self._lock:
            grammar = self._grammars.get(key)
            if grammar is not None:
                self._grammars.move_to_end(key)
                return grammar
        grammar = Grammar(phrases, self.vocab)
        with self._lock:
            self._grammars[key] = grammar
            while len(self._grammars) > GRAMMAR_CACHE:
                self._grammars.popitem(last=False)
        return grammar

    def _decode_utterance(
        self, stream_id: str, utterance: Utterance, decoding: DecodingOptions, words: bool = True
    ) -> Final:
        """An utterance's Final: greedy text, else the grammar, or the beam search (with hotwords)."""
        text, found, start, end = utterance.text, utterance.words, utterance.start, utterance.end
        alternatives: tuple[Alternative, ...] = ()
        lp = utterance.log_probs
        frame_s = self.geometry.stride / MODEL_SAMPLE_RATE
        if lp is not None and len(lp):
            if decoding.grammar is not None:
                result = decoding.grammar.decode(lp, decoding.max_alternatives)

                def align(phrase: str, confidence: float) -> tuple[Word, ...]:
                    return align_words(phrase, lp, self.vocab, frame_s, utterance.log_probs_start, confidence)

                text, found = result.text, align(result.text, result.confidence)
                start, end = found[0].start, found[-1].end
                alternatives = tuple(
                    Alternative(a.text, a.confidence, align(a.text, a.confidence))
                    for a in result.alternatives
                )
            elif self.beam is not None or decoding.hotwords:
                text, found = self._beam_decode(utterance, decoding.hotwords)
        if decoding.max_alternatives and not alternatives:
            confidence = float(np.mean([w.confidence for w in found])) if found else 1.0
            alternatives = (Alternative(text, round(confidence, 6), found),)
        if not words:
            found = ()
            alternatives = tuple(Alternative(a.text, a.confidence) for a in alternatives)
        return Final(stream_id, text, found, start, end, alternatives=alternatives)

    # -- synchronous conveniences (files, tests) ---------------------------------------------------

    def transcribe_stream(
        self,
        samples: np.ndarray,
        chunk_sizes: int | Sequence[int] | None = None,
        *,
        sample_rate: int = MODEL_SAMPLE_RATE,
        timeout: float = 600.0,
        on_event: Callable[[Event], None] | None = None,
        decoding: DecodingOptions | None = None,
    ) -> list[Final]:
        """Stream ``samples`` through a new stream in chunks and return its Finals.

        ``chunk_sizes``: samples per chunk (an int, or a sequence cycled until the audio is used up);
        None = one chunk. Without a started worker the windows run in the calling thread in batches whose
        composition depends only on window numbers, so the output is bit-identical for any chunking.
        """
        events: list[Event] = []

        def collect(event: Event) -> None:
            events.append(event)
            if on_event is not None:
                on_event(event)

        stream = self.open_stream(collect, sample_rate=sample_rate, decoding=decoding)
        samples = np.asarray(samples)
        sizes = itertools.cycle(
            [len(samples) or 1]
            if chunk_sizes is None
            else [chunk_sizes]
            if isinstance(chunk_sizes, int)
            else list(chunk_sizes)
        )
        threaded = self.scheduler.running
        # Keep each accept well inside the queue limit so the synchronous path never overloads.
        piece = max(
            1, int(min(self.settings.limits.max_queued_s, self.settings.streaming.buffer_s) / 4 * sample_rate)
        )
        pos = 0
        while pos < len(samples):
            size = max(1, int(next(sizes)))
            chunk = samples[pos : pos + size]
            pos += size
            for i in range(0, len(chunk), piece):
                stream.accept(chunk[i : i + piece])
                if not threaded:
                    self.scheduler.run_round([stream], aligned=True)
                else:  # back-pressure: never queue enough for the overload policy to drop audio
                    while (
                        stream.queued_seconds() > self.settings.limits.max_queued_s / 3
                        and not stream.done.is_set()
                    ):
                        time.sleep(0.005)
        stream.end()
        if threaded:
            if not stream.done.wait(timeout):
                raise TimeoutError(f"stream {stream.id} did not finish within {timeout} s")
        else:
            while not stream.done.is_set():
                if self.scheduler.run_round([stream], aligned=True) == 0 and not stream.has_ready():
                    break
        errors = [e for e in events if isinstance(e, StreamError) and e.fatal]
        if errors:
            raise RuntimeError(f"stream failed: {errors[0].code}: {errors[0].message}")
        return [e for e in events if isinstance(e, Final)]

    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        """Offline CTC log-probabilities of a 16 kHz float signal in one forward (normalized as a whole)."""
        x = np.asarray(samples, dtype=np.float32)
        x = (x - x.mean()) / np.sqrt(x.var() + NORMALIZATION_EPSILON)
        return self.backend(x[None])[0]

    def offline_log_probs(self, samples: np.ndarray) -> np.ndarray:
        """Log-probabilities of a whole recording as ``conformer-streamer transcribe`` computes them: one
        forward up to 15 s, overlapping 15 s windows beyond (`streamer.offline`)."""
        windows = offline_windows(len(samples), self.geometry.stride, MODEL_SAMPLE_RATE)
        return np.concatenate(
            [self.log_probs(samples[a:b])[keep_from:keep_to] for a, b, keep_from, keep_to in windows]
        )

    def transcribe(
        self,
        samples: np.ndarray,
        sample_rate: int = MODEL_SAMPLE_RATE,
        decoding: DecodingOptions | None = None,
    ) -> Final:
        """Offline reference: the recording in offline windows (one pass up to 15 s), no endpointing,
        decoded as the finals are (greedy, or the beam search when it is on).

        This is the transcript streaming is measured against (tests, benchmarks); long recordings are
        better streamed (transcribe_stream), whose memory stays flat.
        """
        decoder = PcmDecoder(sample_rate, "f32le")
        audio = np.concatenate([decoder.push(np.asarray(samples)), decoder.flush()])
        return self.decode_log_probs(self.offline_log_probs(audio), decoding=decoding)

    def decode_log_probs(
        self, log_probs: np.ndarray, stream_id: str = "offline", decoding: DecodingOptions | None = None
    ) -> Final:
        frame_s = self.geometry.stride / MODEL_SAMPLE_RATE
        merger = CtcMerger(
            self.vocab,
            frame_seconds=frame_s,
            endpointer=Endpointer(math.inf, math.inf, frame_s),
            keep_log_probs=self.beam is not None or (decoding is not None and decoding.keeps_frames),
        )
        merger.push(log_probs, 0, len(log_probs))
        utterance = merger.finish()
        if utterance is None:
            return Final(stream_id, "", (), 0.0, 0.0)
        return self._decode_utterance(stream_id, utterance, decoding or DecodingOptions())
