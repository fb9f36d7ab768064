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

from streamer.windowing import Window

log = logging.getLogger(__name__)


class ModelRunner:
    """Batch of equal-length normalized windows -> CTC log-probabilities, as float32 numpy."""

    def __init__(self, model: Any, device: str = "cpu", dtype: str = "float32") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
        if self.dtype != torch.float32 and self.device.type != "cuda":
            raise ValueError(f"dtype {dtype} needs a CUDA device (got {device}); use float32 on CPU")
        self.model = model.eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, self.dtype)
            logits = self.model(x).logits
            return logits.float().log_softmax(-1).cpu().numpy()


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
    ) -> None:
        self.runner = runner
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, max_wait_ms / 1000.0)
        self.sample_rate = sample_rate
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
            except Exception:  # pragma: no cover - defensive: the loop must survive anything
                log.exception("inference worker: unexpected error (continuing)")
                time.sleep(0.01)

    def _any_ready_locked(self) -> bool:
        return any(s.has_ready() for s in self._streams.values())

    # -- one round ---------------------------------------------------------------------------------

    def run_round(self, streams: list[StreamWork] | None = None, aligned: bool = False) -> int:
        """Take the ready windows of ``streams`` (default: all), run them, deliver; returns windows taken."""
        with self._compute_lock:
            taken: list[tuple[int, StreamWork, Window]] = []
            for order, stream in enumerate(streams if streams is not None else self.streams()):
                try:
                    windows = stream.take_windows(self.max_batch if aligned else None)
                except Exception as exc:
                    log.exception("taking windows failed")
                    stream.fail("internal", f"internal error preparing audio: {exc}")
                    continue
                taken.extend((order, stream, w) for w in windows)
            if not taken:
                return 0
            groups: dict[Any, list[tuple[int, StreamWork, Window]]] = defaultdict(list)
            for item in taken:
                _, stream, w = item
                if w.samples is not None:
                    key = (id(stream), w.seq // self.max_batch, w.length) if aligned else w.length
                    groups[key].append(item)
                elif w.gated:
                    self.stats.gated_windows += 1
            outputs: dict[int, np.ndarray] = {}
            failed: dict[int, str] = {}
            for items in groups.values():
                for i in range(0, len(items), self.max_batch):
                    part = items[i : i + self.max_batch]
                    batch = np.stack([w.samples for _, _, w in part])
                    t0 = time.perf_counter()
                    try:
                        result = self.runner(batch)
                    except Exception as exc:
                        log.exception("model forward failed for a batch of %d windows", len(part))
                        self.stats.errors += 1
                        for _, stream, _ in part:
                            failed[id(stream)] = f"model forward failed: {type(exc).__name__}: {exc}"
                        continue
                    self.stats.compute_seconds += time.perf_counter() - t0
                    self.stats.batches += 1
                    self.stats.windows += len(part)
                    self.stats.audio_seconds_computed += batch.size / self.sample_rate
                    for row, (_, _, w) in enumerate(part):
                        outputs[id(w)] = result[row]
            taken.sort(key=lambda item: (item[0], item[2].seq))
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
