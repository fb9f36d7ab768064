"""Transport-free streaming recognition: the API the daemon, mic mode and file mode use.

Data path, top to bottom (each stage only talks to the next one; one stream is ``stream.RecognitionStream``):

    accept(bytes|array) -> pcm.PcmDecoder        validate, decode, resample to 16 kHz  } stream.AudioIntake
                        -> ring_buffer.RingBuffer bounded per-stream samples             } (overload policy)
                        -> windowing.Chunker      [left | chunk | look-ahead] windows on the frame grid,
                                                  normalization, speech gate (vad.SpeechGate, fed on
                                                  arrival) or energy gate                (stream.WindowQueue)
                        -> scheduler.BatchScheduler one worker thread, cross-stream batches through a
                                                  backend.ModelBackend
                        -> ctc_merge.CtcMerger    seam-exact CTC collapse, endpointing, words
                        -> finals.FinalDecoder    greedy, grammar or beam search        } transcript.
                        -> on_event(Partial | Final | StreamError | EndOfStream)         } TranscriptBuilder

Threading: ``accept``/``reset``/``end``/``close`` may be called from any thread and never block on the
model; ``on_event`` is always called from the inference worker (or, in :meth:`transcribe_stream` without
a started worker, from the calling thread).

Normalization and defaults. ``running`` normalization (mean/variance of everything the segment has
sent so far) is the default: a window that is mostly pause gets blown up to unit variance by its own
statistics, while the running estimate converges to the whole-utterance statistics the model was
trained with, so it stays closer to the offline transcript; and it is what makes the feature-encoder
cache valid (the feature encoder then runs once per sample). The chunk (0.5 s) bounds partial latency
(a sample waits at most one chunk for its window); look-ahead costs compute but no partial latency
(look-ahead text is shown as ``tentative`` at once), so it gets the larger share (1 s: a voice the model
never heard needs it to stream as well as offline). The measured
compute and accuracy of each layout are in ``docs/RESULTS.md`` ("Streaming window layout and
normalization").

Catch-up: when the worker falls a chunk behind, a stream's next window may own up to
``streaming.max_chunks_per_window`` waiting chunks (one forward instead of several; ``windowing``), so an
overloaded engine spends less model time per second of audio and partials come a little later instead
of audio being dropped. The synchronous path never merges, so its output stays independent of chunking.

Overload: audio waiting for the model is bounded by ``limits.max_queued_s`` (and the ring buffer by
``streaming.buffer_s``). Past that, ``overload_policy="drop_oldest"`` closes the open utterance, drops the
queued audio, emits ``StreamError(code="overload", fatal=False)`` and carries on with the newest audio;
``"close"`` emits a fatal ``StreamError(code="overload")`` and closes the stream.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any

import numpy as np

from model.feature_extraction import normalize_waveform
from streamer.backend import backend_for
from streamer.config import ModelSettings, Settings, StreamingSettings
from streamer.ctc_merge import CtcMerger, Vocabulary
from streamer.endpointing import Endpointer
from streamer.events import Event, Final, StreamError
from streamer.finals import FinalDecoder
from streamer.grammar import (
    DecodingOptions,
    Grammar,
    check_hotwords,
    check_max_alternatives,
    check_phrases,
)
from streamer.loading import load_ctc_model, run_dtype
from streamer.offline import offline_windows
from streamer.pcm import MODEL_SAMPLE_RATE, AudioFormatError, PcmDecoder, check_encoding, check_sample_rate
from streamer.scheduler import BatchScheduler
from streamer.stats import EngineCounters, EngineStats
from streamer.stream import RecognitionStream
from streamer.vad import GateSettings, resolve_vad
from streamer.windowing import FrameGeometry, WindowLayout

__all__ = ["AudioFormatError", "EngineStats", "RecognitionEngine", "RecognitionStream", "load_model"]

log = logging.getLogger(__name__)
GRAMMAR_CACHE = 32  # compiled grammars kept for reuse


# -- model loading ---------------------------------------------------------------------------------


def load_model(settings: Settings) -> tuple[Any, Any, Any, str]:
    """(model, tokenizer, config, name) for ``settings.model`` (``streamer.loading.load_ctc_model``)."""
    import torch

    from model import Wav2Vec2CTCTokenizer

    ms = settings.model
    if ms.threads > 0:
        torch.set_num_threads(ms.threads)
    loaded = load_ctc_model(ms.path or None, device=ms.device, dtype=ms.dtype, quantize=ms.quantize)
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(loaded.directory))
    return loaded.model, tokenizer, loaded.model.config, loaded.directory.name


def model_dtype(ms: ModelSettings) -> str:
    """``model.dtype`` with "auto" resolved (``streamer.loading.run_dtype``)."""
    return run_dtype(ms.dtype, ms.device, ms.quantize)


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
        self.finals = FinalDecoder(settings, self.vocab, self.geometry.stride / MODEL_SAMPLE_RATE)
        self._grammars: OrderedDict[tuple[str, ...], Grammar] = OrderedDict()
        self._lock = threading.Lock()
        self._streams: dict[str, RecognitionStream] = {}
        self.counters = EngineCounters()

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
        self.finals.close()

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

    def release(self, stream: RecognitionStream) -> None:
        """``stream`` is done (ended, failed or closed): the engine and the scheduler forget it."""
        with self._lock:
            self._streams.pop(stream.id, None)
        self.scheduler.remove(stream.id)

    # -- stats -------------------------------------------------------------------------------------

    def stats(self) -> EngineStats:
        with self._lock:
            streams = list(self._streams.values())
        s = self.scheduler.stats
        return EngineStats(
            active_streams=len(streams),
            audio_seconds=self.counters.audio_samples / MODEL_SAMPLE_RATE,
            compute_seconds=s.compute_seconds,
            batches=s.batches,
            windows=s.windows,
            gated_windows=s.gated_windows,
            queue_depth=sum(1 for st in streams if st.has_ready()),
            queued_audio_seconds=sum(st.queued_seconds() for st in streams),
            overloads=self.counters.overloads,
            errors=s.errors,
            latency_samples=tuple(self.counters.latencies),
        )

    # -- decoding ----------------------------------------------------------------------------------

    @property
    def beam(self) -> Any:
        """The finals' beam search (None: greedy finals)."""
        return self.finals.beam

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
            self.finals.hotword_beam()  # fails now, with a clear message, when there is no beam search
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
        x = normalize_waveform(x)
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
            keep_log_probs=self.finals.keeps_frames(decoding or DecodingOptions()),
        )
        merger.push(log_probs, 0, len(log_probs))
        utterance = merger.finish()
        if utterance is None:
            return Final(stream_id, "", (), 0.0, 0.0)
        return self.finals.decode(stream_id, utterance, decoding or DecodingOptions())
