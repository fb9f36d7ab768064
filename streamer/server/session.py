"""What every websocket session shares: the bridge from an engine stream to the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from streamer.events import Event, Final, Partial
from streamer.latency import ArrivalTimes

from .protocol import (
    DecodingRequest,
    ProtocolError,
    StartConfig,
    check_audio,
    close_code_for,
    dumps,
)

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from streamer.engine import RecognitionStream
    from streamer.grammar import DecodingOptions

    from .host import ServerHost

log = logging.getLogger("streamer.server")

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
        self, app: ServerHost, endpoint: str, config: StartConfig, decoding: DecodingOptions | None = None
    ) -> None:
        self.app = app
        self.endpoint = endpoint
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.received_s = 0.0  # seconds of audio accepted
        self._arrivals = ArrivalTimes()  # by seconds of audio received
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
            arrived = self._arrivals.of(float(event.end) - 1e-3)  # event times are rounded to ms
            if arrived is not None:
                metrics.latency.observe(max(0.0, now - arrived), type=event.type)
        self.queue.put_nowait(event)

    def accept(self, data: bytes, n_samples: int) -> None:
        """Hand one validated frame to the engine (non-blocking)."""
        if n_samples == 0:
            return
        self.stream.accept(data)
        seconds = n_samples / self.config.sample_rate
        self.received_s += seconds
        self._arrivals.note(self.received_s)
        self.app.metrics.audio_seconds.inc(seconds, endpoint=self.endpoint)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until the engine has processed every window this stream's audio
        allows so far (:meth:`streamer.stream.RecognitionStream.when_idle`); False on timeout.

        The events it emitted on the way are in ``queue`` when this returns: both travel through the
        loop's ``call_soon_threadsafe`` queue, the events first.
        """
        idle = self.stream.when_idle()
        if idle.done():
            await asyncio.sleep(0)  # the events that led there are already on the loop's queue
            return True
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await asyncio.wrap_future(idle)
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


class WebSocketSession:
    """Base of the websocket sessions: the run loop's error handling, the checks every frame passes,
    error reporting, closing, registration for shutdown."""

    endpoint = "stream"
    needs_engine = True  # opens engine streams: refused while the engine worker is dead

    def __init__(self, app: ServerHost, ws: ServerConnection) -> None:
        self.app = app
        self.ws = ws
        self.limits = app.settings.limits
        self.bridge: EngineBridge | None = None
        self.closing = False
        self.stream_id = ""
        self.ended = False  # the client ended its stream (or the server did): no more audio
        self.text_bucket = TokenBucket(self.limits.text_rate_per_s, self.limits.text_burst)
        self.frame_bucket = TokenBucket(self.limits.frame_rate_per_s, 2 * self.limits.frame_rate_per_s)

    async def run(self) -> None:
        """Serve the connection (:meth:`serve`); any failure becomes an error event and a close."""
        try:
            await self.serve()
        except ProtocolError as exc:
            await self.fail(exc.code, exc.message)
        except ConnectionClosed:
            if self.bridge is not None and not self.ended:
                log.info("%s %s: client %s went away mid-stream", self.endpoint, self.stream_id, self.peer)
                self.app.metrics.errors.inc(code="client_gone")
        except Exception as exc:
            log.exception("%s session %s failed", self.endpoint, self.stream_id)
            await self.fail("internal", f"internal error: {type(exc).__name__}")
        finally:
            self.release()

    async def serve(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- what every message passes -----------------------------------------------------------------

    def check_text_rate(self) -> None:
        if not self.text_bucket.take():
            raise ProtocolError(
                "flood", f"more than {self.limits.text_rate_per_s:g} text messages per second"
            )

    def check_frame_rate(self) -> None:
        if not self.frame_bucket.take():
            raise ProtocolError(
                "flood", f"more than {self.limits.frame_rate_per_s:g} binary frames per second"
            )

    def frame_samples(self, data: bytes, encoding: str) -> np.ndarray:
        """A binary frame's samples as sent, once its size and content pass (ProtocolError if not)."""
        if len(data) > self.limits.max_frame_bytes:
            raise ProtocolError("frame_too_large", f"binary frame over {self.limits.max_frame_bytes} bytes")
        return check_audio(data, encoding)

    def over_max_duration(self, bridge: EngineBridge, n_samples: int) -> bool:
        """Would ``n_samples`` more take the stream past ``limits.max_stream_s``?"""
        return bridge.received_s + n_samples / bridge.config.sample_rate > self.limits.max_stream_s

    def max_duration_error(self) -> ProtocolError:
        return ProtocolError(
            "max_duration", f"stream longer than max_stream_s={self.limits.max_stream_s:g} s"
        )

    @staticmethod
    def accept(bridge: EngineBridge, data: bytes, n_samples: int) -> None:
        """Hand a checked frame to the engine; its refusal (``streamer.pcm.AudioFormatError``) is
        ProtocolError ``bad_audio``."""
        try:
            bridge.accept(data, n_samples)
        except ValueError as exc:
            raise ProtocolError("bad_audio", str(exc)) from None

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

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
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
