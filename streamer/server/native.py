"""``/v1/stream``: the native protocol v1 (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from websockets.frames import CloseCode

from streamer.events import EndOfStream, Final, StreamError, to_dict
from streamer.grammar import DecodingOptions
from streamer.readable import format_final

from .protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    close_code_for,
    event_message,
    parse_text,
)
from .session import WebSocketSession

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from model.punctuation import Punctuator

    from .host import ServerHost

log = logging.getLogger("streamer.server")


async def readable_final(final: Final, punctuator: Punctuator, inline_max_words: int) -> Final:
    """``final`` formatted: on the event loop when it has at most ``inline_max_words`` words, else in a
    worker thread.

    Why both: the shipped model costs ~0.3 ms plus ~0.025 ms a word of one core (0.8 ms for 20 words, 2 ms
    for 64: ``bench/bench_punctuation.py --cost-only``), less than the hop to a worker thread and back on a
    busy 2-core host (it wakes the worker, then the loop, each waiting for a core: 8-15 ms wall mean per
    final, docs/RESULTS.md). Inline, a final costs the model alone, and other streams wait at most that
    long; a much longer one would hold every stream for several milliseconds, so it still goes to a thread.
    """
    if len(final.text.split()) <= inline_max_words:
        return format_final(final, punctuator)
    return await asyncio.to_thread(format_final, final, punctuator)


class NativeSession(WebSocketSession):
    endpoint = "stream"

    def __init__(self, app: ServerHost, ws: ServerConnection) -> None:
        super().__init__(app, ws)
        self.terminal: tuple[str, str] | None = None  # error sent instead of "end" (max_duration)
        self.going_away = False  # shutdown: close 1001 after "end"
        self.sender: asyncio.Task | None = None
        self.punctuator = None  # set from the start message's "format"

    def release(self) -> None:
        if self.sender is not None and not self.sender.done():
            self.sender.cancel()
        super().release()

    async def serve(self) -> None:
        # 1. the start message, within handshake_timeout_s
        while True:
            message = await self.recv(self.limits.handshake_timeout_s, "start_timeout")
            if isinstance(message, bytes):
                raise ProtocolError("not_started", "audio before the start message")
            self.check_text_rate()
            command = parse_text(message, self.limits.max_text_bytes)
            if command.type != "start":
                raise ProtocolError("not_started", f"{command.type!r} before the start message")
            break
        assert command.start is not None
        decoding = await self.decoding_options(command.start.decoding)
        self.bridge = self.open_bridge(command.start, decoding)
        # readable finals when asked for and the server has the model; "ready" says which it is
        self.punctuator = self.app.punctuator if command.start.format == "readable" else None
        await self.send_json(
            {
                "type": "ready",
                "version": PROTOCOL_VERSION,
                "stream_id": self.stream_id,
                "sample_rate": command.start.sample_rate,
                "encoding": command.start.encoding,
                "model": str(getattr(self.app.engine, "model_name", "")),
                "format": "readable" if self.punctuator is not None else "raw",
            }
        )
        self.sender = asyncio.create_task(self._send_events())

        # 2. audio and commands until "end"
        while not self.ended and not self.closing:
            receive = asyncio.ensure_future(self.recv(self.limits.idle_timeout_s, "idle_timeout"))
            done, _ = await asyncio.wait({receive, self.sender}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:  # the sender finished (fatal engine error) first
                receive.cancel()
                break
            message = receive.result()
            if isinstance(message, bytes):
                self._audio(message)
            else:
                self.check_text_rate()
                command = parse_text(message, self.limits.max_text_bytes)
                if command.type == "start":
                    raise ProtocolError("bad_message", "start sent twice")
                if command.type == "reset":
                    self.bridge.stream.reset()
                elif command.type == "configure":
                    self.bridge.stream.configure(
                        await self.decoding_options(command.decoding) or DecodingOptions()
                    )
                else:
                    self._end()

        # 3. the remaining finals, "end", close: the sender does it
        timeout = self.bridge.end_timeout()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.sender)
        except TimeoutError:
            raise ProtocolError(
                "internal", f"the engine did not finish the stream within {timeout:.0f} s"
            ) from None

    def _audio(self, data: bytes) -> None:
        assert self.bridge is not None
        self.check_frame_rate()
        if self.ended:  # shutdown ended the stream while this frame was in flight: drop it
            return
        samples = self.frame_samples(data, self.bridge.config.encoding)
        if self.over_max_duration(self.bridge, samples.size):
            # Finish what we have: its finals go out, then the error, then close.
            error = self.max_duration_error()
            self.terminal = (error.code, error.message)
            self._end()
            return
        self.accept(self.bridge, data, samples.size)

    def _end(self) -> None:
        if not self.ended and self.bridge is not None:
            self.ended = True
            self.bridge.stream.end()

    async def _send_events(self) -> None:
        assert self.bridge is not None
        metrics = self.app.metrics
        while True:
            event = await self.bridge.queue.get()
            if isinstance(event, EndOfStream):
                if self.terminal is not None:
                    await self.fail(*self.terminal)
                    return
                await self.send_json(to_dict(event))
                metrics.events.inc(type="end")
                if self.going_away:
                    await self.close(CloseCode.GOING_AWAY, "server shutting down")
                else:
                    await self.close(CloseCode.NORMAL_CLOSURE, "end of stream")
                return
            if isinstance(event, StreamError):
                if event.fatal:
                    await self.fail(event.code, event.message, close_code_for(event.code))
                    return
                metrics.errors.inc(code=event.code)
            else:
                metrics.events.inc(type=event.type)
            if self.punctuator is not None and isinstance(event, Final):
                started = time.perf_counter()
                try:
                    event = await readable_final(
                        event, self.punctuator, self.app.settings.format.inline_max_words
                    )
                    metrics.format_seconds.observe(time.perf_counter() - started)
                except Exception:  # a formatting bug costs the caption its polish, never the stream
                    log.exception("stream %s: formatting a final failed; sent raw", self.stream_id)
            await self.send_json(event_message(to_dict(event)))

    async def shutdown(self) -> None:
        """Server stopping: finish the open utterance, send its finals and ``end``, close 1001."""
        if self.closing:
            return
        if self.bridge is None or self.sender is None:
            await self.fail("shutdown", "server shutting down")
            return
        self.going_away = True
        self._end()
        try:
            async with asyncio.timeout(self.bridge.end_timeout()):
                await asyncio.shield(self.sender)
        except (TimeoutError, Exception):
            await self.close(CloseCode.GOING_AWAY, "server shutting down")
