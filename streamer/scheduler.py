"""Stage 4: one inference worker runs the ready windows of all streams in shared model batches.

The worker wakes when a stream has a ready window, waits up to ``max_wait_ms`` for more (or until
``max_batch`` are ready), takes the ready windows of every stream, groups them by length (all steady
state windows have the same length, so batches need neither padding nor an attention mask) and runs one
forward per group of at most ``max_batch`` windows. Results are handed back to each stream in its window
order. A failing forward only fails the streams in that batch; the worker keeps going and logs, never
dying silently.

``aligned=True`` (the synchronous file path) makes batch composition a function of the window sequence
numbers alone (``seq // max_batch`` groups), so results are bit-identical however the audio was chunked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from streamer.memory import HeapTrimmer
from streamer.windowing import Window

log = logging.getLogger(__name__)


class ModelRunner:
    """Batch of equal-length normalized windows -> CTC log-probabilities, as float32 numpy."""

    def __init__(self, model: Any, device: str = "cpu", dtype: str = "float32") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
        if self.dtype == torch.float16 and self.device.type != "cuda":
            raise ValueError(f"dtype {dtype} needs a CUDA device (got {device}); use bfloat16 on CPU")
        self.model = model.eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, self.dtype)
            logits = self.model(x).logits
            return logits.float().log_softmax(-1).cpu().numpy()

    # The cached-feature path splits the forward in two (same modules, same order as ``forward``).

    @property
    def can_split(self) -> bool:
        inner = getattr(self.model, "wav2vec2_conformer", None)
        return all(
            hasattr(inner, n) for n in ("feature_extractor", "feature_projection", "encoder")
        ) and hasattr(self.model, "lm_head")

    def features(self, batch: np.ndarray) -> Any:
        """Feature-encoder output (B, frames, channels) as a tensor on the model's device."""
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, self.dtype)
            encoder = self.model.wav2vec2_conformer.feature_extractor
            out = encoder(x)
            # Ours returns (B, frames, channels); the transformers module (B, channels, frames).
            return out.transpose(1, 2) if type(encoder).__module__.startswith("transformers") else out

    def encode(self, features: Any) -> np.ndarray:
        """Features (B, frames, channels) -> CTC log-probabilities (B, frames, vocab) as float32 numpy."""
        torch = self.torch
        inner = self.model.wav2vec2_conformer
        with torch.inference_mode():
            projected = inner.feature_projection(features)
            hidden = projected[0] if isinstance(projected, tuple) else projected
            encoded = inner.encoder(hidden)
            hidden = encoded[0] if isinstance(encoded, tuple) else encoded.last_hidden_state
            if getattr(inner, "adapter", None) is not None:
                hidden = inner.adapter(hidden)
            logits = self.model.lm_head(hidden)
            return logits.float().log_softmax(-1).cpu().numpy()


class FeatureCache:
    """Feature-encoder frames of one stream's current segment, by segment frame index (bounded)."""

    def __init__(self) -> None:
        self.generation = -1
        self.base = 0
        self.frames: Any = None  # tensor (n, channels)

    def store(self, generation: int, first: int, frames: Any) -> None:
        import torch

        if generation != self.generation or self.frames is None or first != self.base + len(self.frames):
            if (
                generation == self.generation
                and self.frames is not None
                and first < self.base + len(self.frames)
            ):
                raise RuntimeError(
                    f"feature frames overlap: have up to {self.base + len(self.frames)}, got {first}"
                )
            self.generation, self.base, self.frames = generation, first, frames
        else:
            self.frames = torch.cat([self.frames, frames])

    def gather(self, generation: int, start: int, stop: int) -> Any:
        if generation != self.generation or self.frames is None or start < self.base:
            raise RuntimeError(
                f"features for frames [{start}, {stop}) of segment {generation} are not cached"
            )
        if stop > self.base + len(self.frames):
            raise RuntimeError(f"features for frames [{start}, {stop}) not computed yet")
        return self.frames[start - self.base : stop - self.base]

    def evict_before(self, frame: int) -> None:
        if self.frames is not None and frame > self.base:
            self.frames = self.frames[frame - self.base :].clone()
            self.base = frame


class StreamWork(Protocol):
    """What the scheduler needs from a stream (``streamer.engine.RecognitionStream``)."""

    def has_ready(self) -> bool: ...
    def take_windows(self, aligned: int | None) -> list[Window]: ...
    def consume(self, window: Window, log_probs: np.ndarray | None) -> None: ...
    def fail(self, code: str, message: str) -> None: ...


class SchedulerStats:
    def __init__(self) -> None:
        self.batches = 0
        self.windows = 0
        self.gated_windows = 0
        self.compute_seconds = 0.0
        self.audio_seconds_computed = 0.0
        self.errors = 0


class BatchScheduler:
    def __init__(
        self,
        runner: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 20.0,
        sample_rate: int = 16_000,
        heap_trim_s: float = 0.0,
    ) -> None:
        self.runner = runner
        self.heap = HeapTrimmer(heap_trim_s)
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, max_wait_ms / 1000.0)
        self.sample_rate = sample_rate
        self.stats = SchedulerStats()
        self._streams: dict[str, StreamWork] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._compute_lock = threading.Lock()  # the worker and the synchronous path never overlap
        self._flight_lock = threading.Lock()
        self._in_flight: set[int] = set()  # id() of the streams whose windows the running round took

    # -- registry ----------------------------------------------------------------------------------

    def add(self, stream_id: str, stream: StreamWork) -> None:
        with self._cond:
            self._streams[stream_id] = stream

    def remove(self, stream_id: str) -> None:
        with self._cond:
            self._streams.pop(stream_id, None)

    def streams(self) -> list[StreamWork]:
        with self._cond:
            return list(self._streams.values())

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- worker ------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- progress (any thread) ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while a model round (worker or synchronous path) is running, for any stream."""
        return self._compute_lock.locked()

    def holds(self, stream: StreamWork) -> bool:
        """True while a round that took windows of ``stream`` is running (their events are not out yet).

        A stream is marked before its windows are taken and unmarked after its events were emitted, so
        ``not stream.has_ready() and not scheduler.holds(stream)`` (checked in that order) means every
        event its audio so far allows has been handed to its callback.
        """
        with self._flight_lock:
            return id(stream) in self._in_flight

    def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._worker, name="conformer-streamer-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _ready_count(self) -> int:
        return sum(1 for s in self.streams() if s.has_ready())

    def _worker(self) -> None:
        while True:
            try:
                with self._cond:
                    while not self._stopping and not self._any_ready_locked():
                        self._cond.wait(0.05)
                    if self._stopping:
                        return
                    deadline = time.monotonic() + self.max_wait_s
                    while not self._stopping:
                        ready = sum(1 for s in self._streams.values() if s.has_ready())
                        left = deadline - time.monotonic()
                        if ready >= self.max_batch or left <= 0:
                            break
                        self._cond.wait(left)
                self.run_round()
                self.heap.maybe_trim()
            except Exception:  # pragma: no cover - defensive: the loop must survive anything
                log.exception("inference worker: unexpected error (continuing)")
                time.sleep(0.01)

    def _any_ready_locked(self) -> bool:
        return any(s.has_ready() for s in self._streams.values())

    # -- one round ---------------------------------------------------------------------------------

    def run_round(self, streams: list[StreamWork] | None = None, aligned: bool = False) -> int:
        """Take the ready windows of ``streams`` (default: all), run them, deliver; returns windows taken."""
        with self._compute_lock:
            try:
                return self._round(streams, aligned)
            finally:
                with self._flight_lock:
                    self._in_flight.clear()

    def _round(self, streams: list[StreamWork] | None, aligned: bool) -> int:
        taken: list[tuple[int, StreamWork, Window]] = []
        for order, stream in enumerate(streams if streams is not None else self.streams()):
            with self._flight_lock:
                self._in_flight.add(id(stream))
            try:
                windows = stream.take_windows(self.max_batch if aligned else None)
            except Exception as exc:
                log.exception("taking windows failed")
                stream.fail("internal", f"internal error preparing audio: {exc}")
                windows = []
            if not windows:  # nothing of this stream in flight (its notices, if any, are emitted)
                with self._flight_lock:
                    self._in_flight.discard(id(stream))
            taken.extend((order, stream, w) for w in windows)
        if not taken:
            return 0
        outputs: dict[int, np.ndarray] = {}
        failed: dict[int, str] = {}

        def key(stream: StreamWork, w: Window, length: int) -> Any:
            return (id(stream), w.seq // self.max_batch, length) if aligned else length

        # Stage 1 (cached-feature path): the feature encoder on the new samples only.
        blocks: dict[Any, list[tuple[int, StreamWork, Window]]] = defaultdict(list)
        for item in taken:
            _, stream, w = item
            if w.block is not None:
                blocks[key(stream, w, len(w.block))].append(item)
            elif w.gated:
                self.stats.gated_windows += 1
        computed: dict[int, Any] = {}
        for items in blocks.values():
            for part in self._parts(items):
                batch = np.stack([w.block for _, _, w in part])
                t0 = time.perf_counter()
                try:
                    feats = self.runner.features(batch)  # type: ignore[attr-defined]
                except Exception as exc:
                    self._failed(part, exc, failed)
                    continue
                self.stats.compute_seconds += time.perf_counter() - t0
                self.stats.audio_seconds_computed += batch.size / self.sample_rate
                for row, (_, _, w) in enumerate(part):
                    computed[id(w)] = feats[row, : w.frames_to - w.block_from]

        # Stage 2: one forward per group of equal-length windows (full windows or cached features).
        # Each stream's cache is filled and read in window order (a gated gap restarts it); the
        # gathered slices are views that stay valid when the cache moves on.
        taken.sort(key=lambda item: (item[0], item[2].seq))
        groups: dict[Any, list[tuple[int, StreamWork, Window, Any]]] = defaultdict(list)
        for order, stream, w in taken:
            if id(stream) in failed:
                continue
            if w.samples is not None:
                groups[("w", key(stream, w, w.length))].append((order, stream, w, w.samples))
            elif w.needs_encoder:
                try:
                    if id(w) in computed:
                        stream.features.store(w.generation, w.block_from, computed.pop(id(w)))
                    x = stream.features.gather(w.generation, w.frames_from, w.frames_to)
                    stream.features.evict_before(w.frames_from)
                except Exception as exc:
                    self._failed([(order, stream, w)], exc, failed)
                    continue
                groups[("f", key(stream, w, w.frames_to - w.frames_from))].append((order, stream, w, x))
        for (path, _), items in groups.items():
            for part in self._parts(items):
                t0 = time.perf_counter()
                try:
                    if path == "w":
                        batch = np.stack([x for *_, x in part])
                        result = self.runner(batch)
                        self.stats.audio_seconds_computed += batch.size / self.sample_rate
                    else:
                        import torch

                        result = self.runner.encode(torch.stack([x for *_, x in part]))  # type: ignore[attr-defined]
                except Exception as exc:
                    self._failed([(o, st, w) for o, st, w, _ in part], exc, failed)
                    continue
                self.stats.compute_seconds += time.perf_counter() - t0
                self.stats.batches += 1
                self.stats.windows += len(part)
                for row, (_, _, w, _) in enumerate(part):
                    outputs[id(w)] = result[row]
        for _, stream, w in taken:
            if id(stream) in failed:
                stream.fail("internal", failed.pop(id(stream)))
                continue
            try:
                stream.consume(w, outputs.get(id(w)))
            except Exception as exc:
                log.exception("merging window %d failed", w.seq)
                stream.fail("internal", f"internal error decoding: {type(exc).__name__}: {exc}")
        return len(taken)

    def _parts(self, items: list) -> list[list]:
        return [items[i : i + self.max_batch] for i in range(0, len(items), self.max_batch)]

    def _failed(self, part: list, exc: Exception, failed: dict[int, str]) -> None:
        log.error("model forward failed for a batch of %d windows", len(part), exc_info=exc)
        self.stats.errors += 1
        for _, stream, _ in part:
            failed[id(stream)] = f"model forward failed: {type(exc).__name__}: {exc}"
