"""Stage 2: a bounded per-stream sample buffer addressed by absolute sample index.

Samples are appended at the write end and read back by absolute position since the stream start, so
window arithmetic never has to care where the buffer wrapped. Memory is allocated once (``capacity``
samples) and never grows: a 4-hour stream holds exactly as much as a 4-second one.
"""

from __future__ import annotations

import numpy as np


class RingBufferOverflow(Exception):
    """Appending would overwrite samples that are still needed (``start`` has not been advanced)."""


class RingBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, dtype=np.float32)
        self.start = 0  # absolute index of the oldest sample kept
        self.end = 0  # absolute index one past the newest sample

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def free(self) -> int:
        return self.capacity - len(self)

    def append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if n > self.free:
            raise RingBufferOverflow(f"{n} samples do not fit ({self.free} free of {self.capacity})")
        pos = self.end % self.capacity
        first = min(n, self.capacity - pos)
        self._data[pos : pos + first] = samples[:first]
        if first < n:
            self._data[: n - first] = samples[first:]
        self.end += n

    def read(self, start: int, stop: int) -> np.ndarray:
        """Copy of samples ``[start, stop)`` (absolute indices, must be held)."""
        if start < self.start or stop > self.end or start > stop:
            raise IndexError(f"samples [{start}, {stop}) not held (buffer holds [{self.start}, {self.end}))")
        n = stop - start
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        if first == n:
            return self._data[pos : pos + n].copy()
        return np.concatenate([self._data[pos:], self._data[: n - first]])

    def discard_before(self, index: int) -> None:
        """Forget samples before absolute ``index`` (clamped to what is held)."""
        self.start = max(self.start, min(int(index), self.end))

    def skip_to(self, index: int) -> None:
        """Drop everything and continue at absolute ``index`` (>= end): used after an overload drop."""
        self.start = self.end = max(int(index), self.end)
