"""``/v1/listen``: broadcast of the daemon's microphone captions to every connected client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from .protocol import PROTOCOL_VERSION, ProtocolError
from .session import TokenBucket, WebSocketSession

log = logging.getLogger("streamer.server")

CLIENT_QUEUE = 256  # messages buffered per slow listener; the oldest are dropped beyond


class ListenHub:
    """Fan-out of events (already protocol dicts) to listener queues; a slow listener loses old ones."""

    def __init__(self, metrics) -> None:
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

    def unsubscribe(self, queue) -> None:
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


class ListenSession(WebSocketSession):
    endpoint = "listen"
    needs_engine = False  # relays the microphone's captions; opens no stream of its own

    async def run(self) -> None:
        hub = self.app.hub
        if self.app.mic is None:
            await self.fail("no_source", "the daemon has no microphone (start it with serve --mic)")
            return
        queue = hub.subscribe()
        self.stream_id = hub.source_id
        pump = asyncio.create_task(self._pump(queue))
        reader = asyncio.create_task(self._read())
        try:
            await self.send_json(
                {
                    "type": "ready",
                    "version": PROTOCOL_VERSION,
                    "stream_id": hub.source_id,
                    "sample_rate": hub.sample_rate,
                    "model": str(getattr(self.app.engine, "model_name", "")),
                }
            )
            done, _ = await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if isinstance(exc, ProtocolError):
                    await self.fail(exc.code, exc.message)
        except ConnectionClosed:
            pass
        finally:
            pump.cancel()
            reader.cancel()
            hub.unsubscribe(queue)

    async def _pump(self, queue) -> None:
        while True:
            message = await queue.get()
            if message is None:  # shutdown
                await self.close(CloseCode.GOING_AWAY, "server shutting down")
                return
            await self.send_json(message)

    async def _read(self) -> None:
        """Listeners send nothing meaningful; read (and bound) what they send to notice the close."""
        bucket = TokenBucket(self.limits.text_rate_per_s, self.limits.text_burst)
        while True:
            message = await self.ws.recv()
            if not bucket.take():
                raise ProtocolError("flood", "too many messages per second")
            if isinstance(message, bytes):
                raise ProtocolError("bad_message", "/v1/listen does not take audio")

    async def shutdown(self) -> None:
        """Nothing to finish here: ``ListenHub.close_all`` makes the pump send what is queued and close."""
