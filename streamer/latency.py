"""When audio arrived, so that the latency of what is computed from it can be measured."""

from __future__ import annotations

import bisect
import time

ARRIVALS_KEPT = 4096  # per stream; the oldest half goes when full


class ArrivalTimes:
    """Monotonic arrival time of each received chunk, by the stream position its last sample reaches.

    Positions only grow (samples, or seconds: the caller's unit); lookups are by bisection.
    """

    def __init__(self, limit: int = ARRIVALS_KEPT) -> None:
        self.limit = max(2, limit)
        self._positions: list[float] = []
        self._times: list[float] = []

    def note(self, position: float, at: float | None = None) -> None:
        """The audio up to ``position`` has arrived (at ``at``, default now)."""
        self._positions.append(position)
        self._times.append(time.monotonic() if at is None else at)
        if len(self._positions) > self.limit:
            del self._positions[: self.limit // 2]
            del self._times[: self.limit // 2]

    def of(self, position: float) -> float | None:
        """When the sample at ``position`` arrived: the time of the first chunk reaching it (None: it has
        not arrived yet; a forgotten position gets the oldest time still kept)."""
        i = bisect.bisect_left(self._positions, position)
        return self._times[i] if i < len(self._times) else None

    def clear(self) -> None:
        self._positions.clear()
        self._times.clear()
