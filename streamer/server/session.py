"""What every websocket session shares: the bridge from an engine stream to the event loop."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from streamer.events import EndOfStream, Event, Final, Partial, StreamError

from .protocol import CloseCode, DecodingRequest, ProtocolError, StartConfig, close_code_for, dumps

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from streamer.engine import RecognitionStream
    from streamer.grammar import DecodingOptions

    from .app import App

log = logging.getLogger("streamer.server")

_MAX_ARRIVALS = 4096

# How long a session waits for the engine's last finals after end-of-stream (or at shutdown):
# END_TIMEOUT_BASE_S plus END_TIMEOUT_RTF seconds per second of the stream's audio still queued for
# the model, at most END_TIMEOUT_MAX_S. The factor is pessimistic (the default layout costs ~1.5x an
# offline forward in CPU time, and a loaded worker shares itself between streams), so a stream that is
# behind but still progressing gets its finals instead of an "internal" error.
END_TIMEOUT_BASE_S = 30.0
END_TIMEOUT_RTF = 4.0
END_TIMEOUT_MAX_S = 300.0


def end_timeout(
    queued_audio_s: float,
    *,
    base_s: float = END_TIMEOUT_BASE_S,
    rtf: float = END_TIMEOUT_RTF,
    max_s: float = END_TIMEOUT_MAX_S,
) -> float:
    """Seconds to wait for a stream's remaining events once it has ended, given its unprocessed audio.

    ``base_s + rtf * queued_audio_s``, capped at ``max_s`` (never below ``base_s``); a negative or
    non-finite backlog counts as none.
    """
    backlog = queued_audio_s if math.isfinite(queued_audio_s) and queued_audio_s > 0 else 0.0
    return max(base_s, min(max_s, base_s + rtf * backlog))


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class EngineBridge:
    """One engine stream; its events (engine worker thread) hop onto the loop into ``queue``.

    Also keeps the arrival time of the audio so the latency of each event can be measured: the time
    from receiving the last audio sample an event covers (``event.end``) to the event reaching the loop.
    """

    def __init__(
        self, app: App, endpoint: str, config: StartConfig, decoding: DecodingOptions | None = None
    ) -> None:
        self.app = app
        self.endpoint = endpoint
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.received_s = 0.0  # seconds of audio accepted
        self._arrival_s: list[float] = []
        self._arrival_t: list[float] = []
        self._closed = False
        self.stream: RecognitionStream = app.engine.open_stream(
            self._on_event,
            sample_rate=config.sample_rate,
            encoding=config.encoding,
            partials=config.partials,
            words=config.words,
            decoding=decoding,
        )
        self.id: str = self.stream.id
        app.metrics.streams_active.inc()
        app.metrics.streams_total.inc(endpoint=endpoint)

    # engine worker thread
    def _on_event(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # RuntimeError: the loop is closed, the server is gone
            self.loop.call_soon_threadsafe(self._deliver, event)

    # event loop
    def _deliver(self, event: Event) -> None:
        now = time.monotonic()
        metrics = self.app.metrics
        if isinstance(event, Partial | Final):
            arrived = self._arrival_of(float(event.end))
            if arrived is not None:
                metrics.latency.observe(max(0.0, now - arrived), type=event.type)
        self.queue.put_nowait(event)

    def _arrival_of(self, seconds: float) -> float | None:
        i = bisect.bisect_left(self._arrival_s, seconds - 1e-3)  # event times are rounded to ms
        if i >= len(self._arrival_s):
            return None
        return self._arrival_t[i]

    def accept(self, data: bytes, n_samples: int) -> None:
        """Hand one validated frame to the engine (non-blocking)."""
        if n_samples == 0:
            return
        self.stream.accept(data)
        seconds = n_samples / self.config.sample_rate
        self.received_s += seconds
        self._arrival_s.append(self.received_s)
        self._arrival_t.append(time.monotonic())
        if len(self._arrival_s) > _MAX_ARRIVALS:
            del self._arrival_s[: _MAX_ARRIVALS // 2]
            del self._arrival_t[: _MAX_ARRIVALS // 2]
        self.app.metrics.audio_seconds.inc(seconds, endpoint=self.endpoint)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until the engine has processed every window this stream's audio
        allows so far (:meth:`streamer.engine.RecognitionStream.when_idle`); False on timeout.

        The events it emitted on the way are in ``queue`` when this returns: both travel through the
        loop's ``call_soon_threadsafe`` queue, the events first.
        """
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await asyncio.wrap_future(self.stream.when_idle())
        except TimeoutError:
            return False
        return True

    def end_timeout(self) -> float:
        """:func:`end_timeout` for this stream's audio still waiting for the model (call after ``end``)."""
        return end_timeout(self.stream.queued_seconds())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.app.metrics.streams_active.dec()
        try:
            self.stream.close()
        except Exception:
            log.exception("closing engine stream %s failed", self.id)


ENGINE_DOWN = "the recognition engine is not running; try again later"


class Session:
    """Base of the websocket sessions: error reporting, closing, registration for shutdown."""

    endpoint = "stream"
    needs_engine = True  # opens engine streams: refused while the engine worker is dead

    def __init__(self, app: App, ws: ServerConnection) -> None:
        self.app = app
        self.ws = ws
        self.limits = app.settings.limits
        self.bridge: EngineBridge | None = None
        self.closing = False
        self.stream_id = ""

    async def decoding_options(self, request: DecodingRequest | None) -> DecodingOptions | None:
        """The engine's options for a client's request (grammar checked against the model's vocabulary);
        ProtocolError ``bad_message`` when the model cannot decode it. Compiled in a thread: 10 000
        phrases take ~0.4 s, which must not stall the other connections."""
        if request is None:
            return None
        from streamer.grammar import GrammarError

        try:
            return await asyncio.to_thread(
                self.app.engine.decoding_options,
                grammar=list(request.grammar) if request.grammar is not None else None,
                hotwords=list(request.hotwords),
                max_alternatives=request.max_alternatives,
            )
        except GrammarError as exc:
            raise ProtocolError("bad_message", str(exc)) from None

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.ws.send(dumps(obj))

    def engine_down(self) -> bool:
        """Is the engine worker dead, so that this session cannot get a stream? Counts the refusal."""
        if not self.needs_engine or self.app.engine_is_alive():
            return False
        self.app.metrics.connections_refused.inc(reason="engine_dead")
        return True

    def open_bridge(self, config: StartConfig, decoding: DecodingOptions | None = None) -> EngineBridge:
        """A new engine stream for this session; ProtocolError when the server cannot take one now."""
        if self.app.stopping:
            raise ProtocolError("shutdown", "server shutting down")
        if self.engine_down():
            raise ProtocolError("unavailable", ENGINE_DOWN)
        try:
            self.bridge = EngineBridge(self.app, self.endpoint, config, decoding)
        except ValueError as exc:  # the engine refused the format
            raise ProtocolError("bad_message", str(exc)) from None
        self.stream_id = self.bridge.id
        return self.bridge

    async def fail(self, code: str, message: str, close_code: int | None = None) -> None:
        """Send an error event (fatal) and close the connection with the code of that error."""
        if self.closing:
            return
        self.closing = True
        self.app.metrics.errors.inc(code=code)
        close = int(close_code if close_code is not None else close_code_for(code))
        log.info("%s %s: %s (%s) -> close %d", self.endpoint, self.peer, code, message, close)
        with contextlib.suppress(Exception):
            await self.send_error(code, message)
        await self.close(close, message)

    async def send_error(self, code: str, message: str) -> None:
        await self.send_json(
            {"type": "error", "stream_id": self.stream_id, "code": code, "message": message, "fatal": True}
        )

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        self.closing = True
        reason_bytes = reason.encode()[:120]
        # Keep reading (and dropping) what the client still sends, or its close frame could sit behind
        # a full receive queue until close_timeout.
        discard = asyncio.create_task(self._discard_incoming())
        try:
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason_bytes.decode("utf-8", "ignore"))
        finally:
            discard.cancel()

    async def _discard_incoming(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                await self.ws.recv()

    @property
    def peer(self) -> str:
        try:
            return "{}:{}".format(*tuple(self.ws.remote_address[:2]))
        except Exception:
            return "?"

    async def recv(self, timeout: float, timeout_code: str) -> str | bytes:
        try:
            async with asyncio.timeout(timeout if timeout > 0 else None):
                return await self.ws.recv()
        except TimeoutError:
            raise ProtocolError(timeout_code, f"nothing received for {timeout:g} s") from None

    async def shutdown(self) -> None:  # pragma: no cover - overridden
        await self.fail("shutdown", "server shutting down")

    def release(self) -> None:
        if self.bridge is not None:
            self.bridge.close()


def is_fatal(event: Event) -> bool:
    return isinstance(event, StreamError) and event.fatal


def is_end(event: Event) -> bool:
    return isinstance(event, EndOfStream)
