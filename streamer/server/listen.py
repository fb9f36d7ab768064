"""``/v1/listen``: broadcast of the daemon's microphone captions to every connected client."""

from __future__ import annotations

import asyncio
import logging

from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from .protocol import PROTOCOL_VERSION, ProtocolError
from .session import TokenBucket, WebSocketSession

log = logging.getLogger("streamer.server")


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
