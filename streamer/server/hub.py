"""The fan-out of the daemon's microphone captions to the ``/v1/listen`` clients."""

from __future__ import annotations

import asyncio
from typing import Any

from .metrics import ServerMetrics

CLIENT_QUEUE = 256  # messages buffered per slow listener; the oldest are dropped beyond


class ListenHub:
    """Fan-out of events (already protocol dicts) to listener queues; a slow listener loses old ones."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self.clients: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.source_id = ""
        self.sample_rate = 16000
        self.dropped = 0

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(CLIENT_QUEUE)
        self.clients.add(queue)
        self.metrics.listeners.set(len(self.clients))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self.clients.discard(queue)
        self.metrics.listeners.set(len(self.clients))

    def publish(self, message: dict[str, Any]) -> None:
        """Call on the event loop."""
        for queue in list(self.clients):
            if queue.full():
                try:
                    queue.get_nowait()
                    self.dropped += 1
                except asyncio.QueueEmpty:
                    pass
            queue.put_nowait(message)

    def close_all(self) -> None:
        for queue in list(self.clients):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
