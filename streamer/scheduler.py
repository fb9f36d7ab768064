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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from streamer.memory import HeapTrimmer
from streamer.windowing import Window, WindowKind

if TYPE_CHECKING:
    import torch

    from streamer.backend import ModelBackend

log = logging.getLogger(__name__)


class FeatureCache:
    """Feature-encoder frames of one stream's current segment, by segment frame index (bounded)."""

    def __init__(self) -> None:
        self.generation = -1
        self.base = 0
        self.frames: torch.Tensor | None = None  # (n, channels): segment frames [base, base + n)

    def store(self, generation: int, first: int, frames: torch.Tensor) -> None:
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

    def gather(self, generation: int, start: int, stop: int) -> torch.Tensor:
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

    features: FeatureCache  # its feature-encoder frames (cached-feature path)

    def has_ready(self) -> bool: ...
    def take_windows(self, aligned: int | None) -> list[Window]: ...
    def consume(self, window: Window, log_probs: np.ndarray | None) -> None: ...
    def fail(self, code: str, message: str) -> None: ...


@dataclass(eq=False)
class StreamShare:
    """One stream's part in a round."""

    stream: StreamWork
    order: int  # position in the round: results are handed back stream by stream, in this order
    failure: str | None = None  # a forward with its windows failed: the stream fails, once

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message


@dataclass(eq=False)
class WorkItem:
    """One window of a round, from its stream to its log-probabilities."""

    share: StreamShare
    window: Window
    new_features: torch.Tensor | None = None  # stage 1 (FEATURES with a block): (block frames, channels)
    model_input: np.ndarray | torch.Tensor | None = None  # stage 2: samples (length,) | features (frames, C)
    log_probs: np.ndarray | None = None  # (frames, vocab); None: gated or empty, all blank


# Items batched together: same kind and input length; on the aligned path also the same stream and
# block of ``max_batch`` window numbers.
GroupKey = tuple[WindowKind, int, int, int]


@dataclass
class SchedulerStats:
    batches: int = 0
    windows: int = 0
    gated_windows: int = 0
    compute_seconds: float = 0.0  # wall time in model forwards
    errors: int = 0


class BatchScheduler:
    def __init__(
        self,
        backend: ModelBackend,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 20.0,
        heap_trim_s: float = 0.0,
    ) -> None:
        self.backend = backend
        self.heap = HeapTrimmer(heap_trim_s)
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, max_wait_ms / 1000.0)
        self.stats = SchedulerStats()
        self._streams: dict[str, StreamWork] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._compute_lock = threading.Lock()  # the worker and the synchronous path never overlap

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

    @property
    def busy(self) -> bool:
        """True while a model round (worker or synchronous path) is running, for any stream."""
        return self._compute_lock.locked()

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

    def _worker(self) -> None:
        while True:
            try:
                with self._cond:
                    while not self._stopping and not any(s.has_ready() for s in self._streams.values()):
                        self._cond.wait(0.05)
                    if self._stopping:
                        return
                    deadline = time.monotonic() + self.max_wait_s
                    while not self._stopping:
                        left = deadline - time.monotonic()
                        if left <= 0 or self._ready_locked() >= self.max_batch:
                            break
                        self._cond.wait(left)
                self.run_round()
                self.heap.maybe_trim()
            except Exception:  # pragma: no cover - defensive: the loop must survive anything
                log.exception("inference worker: unexpected error (continuing)")
                time.sleep(0.01)

    def _ready_locked(self) -> int:
        return sum(1 for s in self._streams.values() if s.has_ready())

    # -- one round ---------------------------------------------------------------------------------

    def run_round(self, streams: list[StreamWork] | None = None, aligned: bool = False) -> int:
        """Take the ready windows of ``streams`` (default: all), run them, deliver; returns windows taken."""
        with self._compute_lock:
            return self._round(streams, aligned)

    def _round(self, streams: list[StreamWork] | None, aligned: bool) -> int:
        items = self._take(streams if streams is not None else self.streams(), aligned)
        if not items:
            return 0
        self._run_feature_encoder(items, aligned)
        # Each stream's cache is filled and read in window order (a gated gap restarts it).
        items.sort(key=lambda item: (item.share.order, item.window.seq))
        self._run_model(items, aligned)
        for item in items:
            share, stream, w = item.share, item.share.stream, item.window
            if share.failure is not None:
                stream.fail("internal", share.failure)  # a failed stream ignores the rest of its windows
                continue
            try:
                stream.consume(w, item.log_probs)
            except Exception as exc:
                log.exception("merging window %d failed", w.seq)
                stream.fail("internal", f"internal error decoding: {type(exc).__name__}: {exc}")
        return len(items)

    def _take(self, streams: list[StreamWork], aligned: bool) -> list[WorkItem]:
        items: list[WorkItem] = []
        for order, stream in enumerate(streams):
            try:
                windows = stream.take_windows(self.max_batch if aligned else None)
            except Exception as exc:
                log.exception("taking windows failed")
                stream.fail("internal", f"internal error preparing audio: {exc}")
                continue
            share = StreamShare(stream, order)
            items.extend(WorkItem(share, w) for w in windows)
        return items

    def _key(self, item: WorkItem, length: int, aligned: bool) -> GroupKey:
        if aligned:
            return (item.window.kind, item.share.order, item.window.seq // self.max_batch, length)
        return (item.window.kind, -1, -1, length)

    def _run_feature_encoder(self, items: list[WorkItem], aligned: bool) -> None:
        """Stage 1 (cached-feature path): the feature encoder on the new samples only."""
        blocks: dict[GroupKey, list[WorkItem]] = defaultdict(list)
        for item in items:
            w = item.window
            if w.block is not None:
                blocks[self._key(item, len(w.block), aligned)].append(item)
            elif w.gated:
                self.stats.gated_windows += 1
        for group in blocks.values():
            for part in self._parts(group):
                batch = np.stack([item.window.block for item in part])  # (B, block samples)
                t0 = time.perf_counter()
                try:
                    feats = self.backend.features(batch)  # (B, frames, channels)
                except Exception as exc:
                    self._failed(part, exc)
                    continue
                self.stats.compute_seconds += time.perf_counter() - t0
                for row, item in enumerate(part):
                    item.new_features = feats[row, : item.window.frames_to - item.window.block_from]

    def _run_model(self, items: list[WorkItem], aligned: bool) -> None:
        """Stage 2: one forward per group of equal-length inputs (full windows or cached features).

        The gathered feature slices are views that stay valid when the cache moves on.
        """
        groups: dict[GroupKey, list[WorkItem]] = defaultdict(list)
        for item in items:
            share, w = item.share, item.window
            if share.failure is not None:
                continue
            if w.kind is WindowKind.SAMPLES:
                assert w.samples is not None
                item.model_input = w.samples
                groups[self._key(item, len(w.samples), aligned)].append(item)
            elif w.kind is WindowKind.FEATURES:
                cache = share.stream.features
                try:
                    if item.new_features is not None:
                        cache.store(w.generation, w.block_from, item.new_features)
                        item.new_features = None
                    item.model_input = cache.gather(w.generation, w.frames_from, w.frames_to)
                    cache.evict_before(w.frames_from)
                except Exception as exc:
                    self._failed([item], exc)
                    continue
                groups[self._key(item, w.frames_to - w.frames_from, aligned)].append(item)
        for (kind, *_), group in groups.items():
            for part in self._parts(group):
                t0 = time.perf_counter()
                try:
                    if kind is WindowKind.SAMPLES:
                        result = self.backend(np.stack([item.model_input for item in part]))
                    else:
                        import torch

                        result = self.backend.encode(torch.stack([item.model_input for item in part]))
                except Exception as exc:
                    self._failed(part, exc)
                    continue
                self.stats.compute_seconds += time.perf_counter() - t0
                self.stats.batches += 1
                self.stats.windows += len(part)
                for row, item in enumerate(part):
                    item.log_probs = result[row]  # (frames, vocab)
                    item.model_input = None

    def _parts(self, items: list[WorkItem]) -> list[list[WorkItem]]:
        return [items[i : i + self.max_batch] for i in range(0, len(items), self.max_batch)]

    def _failed(self, part: list[WorkItem], exc: Exception) -> None:
        log.error("model forward failed for a batch of %d windows", len(part), exc_info=exc)
        self.stats.errors += 1
        for item in part:
            item.share.fail(f"model forward failed: {type(exc).__name__}: {exc}")
