"""``serve --mic``: capture a local microphone through sounddevice into one engine stream.

Partials/finals go to every ``/v1/listen`` client. A lost device (open failure, stream that stops or
stalls, callback errors) is reported (log, an ``error`` event with ``fatal: false`` to the listeners,
``conformer_mic_errors_total``) and reopened with exponential back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamer.events import Event, StreamError, to_dict

from .protocol import event_message

if TYPE_CHECKING:
    from streamer.stream import RecognitionStream

    from .host import ServerHost

log = logging.getLogger("streamer.server.mic")

SAMPLE_RATE = 16000


def parse_device(device: str | None) -> int | str | None:
    """``""``/None = default input device; digits = device index; anything else = a name substring."""
    if device is None or device.strip() == "":
        return None
    device = device.strip()
    return int(device) if device.isdigit() else device


class MicSource:
    def __init__(
        self,
        app: ServerHost,
        device: str | None,
        *,
        stream_factory: Callable[..., Any] | None = None,
        block_s: float = 0.1,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        stall_s: float = 2.0,
    ) -> None:
        self.app = app
        self.device = parse_device(device)
        self.stream_factory = stream_factory
        self.block_s = block_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.stall_s = stall_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine_stream: RecognitionStream | None = None
        self.stream_id = ""
        self.capturing = False
        self.errors: list[str] = []  # recent error messages (newest last), for /healthz
        self.attempts = 0
        self._stop = asyncio.Event()
        self._last_callback = 0.0
        self._callback_error: str | None = None
        self._finished = False
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------ engine side
    def _on_event(self, event: Event) -> None:  # engine worker thread
        loop = self.loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: Event) -> None:
        metrics = self.app.metrics
        if isinstance(event, StreamError):
            metrics.errors.inc(code=event.code)
        else:
            metrics.events.inc(type=event.type)
        self.app.hub.publish(event_message(to_dict(event)))

    # ------------------------------------------------------------------ capture
    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio thread
        self._last_callback = time.monotonic()
        if status and getattr(status, "input_overflow", False):
            self.app.metrics.mic_errors.inc(kind="overflow")
        try:
            data = indata[:, 0] if getattr(indata, "ndim", 1) == 2 else indata
            self.engine_stream.accept(bytes(data.astype("<i2", copy=False).tobytes()))
            self.app.metrics.audio_seconds.inc(frames / SAMPLE_RATE, endpoint="mic")
        except Exception as exc:  # never let an exception escape into PortAudio
            self._callback_error = f"engine rejected microphone audio: {exc}"  # the watcher reopens

    def _finished_callback(self) -> None:  # PortAudio thread
        self._finished = True

    def _open(self, refresh: bool = False):
        factory = self.stream_factory
        if factory is None:
            import sounddevice

            if refresh:  # a replugged device gets a new PortAudio index: list the devices afresh
                with contextlib.suppress(Exception):
                    sounddevice._terminate()
                    sounddevice._initialize()
            factory = sounddevice.InputStream
        self._finished = False
        self._callback_error = None
        stream = factory(
            samplerate=SAMPLE_RATE,
            channels=1,
            dtype="int16",
            blocksize=int(SAMPLE_RATE * self.block_s),
            device=self.device,
            callback=self._callback,
            finished_callback=self._finished_callback,
        )
        try:
            stream.start()
        except Exception:
            _quiet_close(stream)
            raise
        self._last_callback = time.monotonic()
        return stream

    def _report(self, kind: str, message: str) -> None:
        log.warning("microphone %s: %s", kind, message)
        self.errors = [*self.errors[-9:], f"{kind}: {message}"]
        self.app.metrics.mic_errors.inc(kind=kind)
        self.app.hub.publish(
            {
                "type": "error",
                "stream_id": self.stream_id,
                "code": "mic_error",
                "message": f"{kind}: {message}",
                "fatal": False,
            }
        )

    async def _watch(self, stream) -> str | None:
        """Return why the capture stopped, or None when asked to stop."""
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(0.1):
                    await self._stop.wait()
                return None
            except TimeoutError:
                pass
            if self._callback_error:
                return self._callback_error
            if self._finished:
                return "the input stream stopped (device lost?)"
            if not getattr(stream, "active", True):
                return "the input stream is no longer active"
            if time.monotonic() - self._last_callback > self.stall_s:
                return f"no audio from the device for {self.stall_s:g} s"
        return None

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.engine_stream = self.app.engine.open_stream(self._on_event, sample_rate=SAMPLE_RATE)
        self.stream_id = str(getattr(self.engine_stream, "id", "mic"))
        self.app.hub.source_id = self.stream_id
        self.app.hub.sample_rate = SAMPLE_RATE
        self.app.metrics.streams_active.inc()
        self.app.metrics.streams_total.inc(endpoint="mic")
        delay = self.retry_initial_s
        try:
            while not self._stop.is_set():
                self.attempts += 1
                try:
                    stream = await asyncio.to_thread(self._open, self.attempts > 1)
                except Exception as exc:
                    self._report("open_failed", f"{type(exc).__name__}: {exc}")
                    if await self._sleep(delay):
                        break
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                started = time.monotonic()
                self.capturing = True
                self.app.metrics.mic_up.set(1)
                log.info("microphone %r capturing", self.device)
                reason = await self._watch(stream)
                self.capturing = False
                self.app.metrics.mic_up.set(0)
                await asyncio.to_thread(_quiet_close, stream)
                if reason is None:
                    break
                self._report("device_lost", reason)
                try:
                    self.engine_stream.reset()  # the utterance cut by the loss gets its final
                except Exception:
                    log.exception("resetting the microphone stream failed")
                if time.monotonic() - started > 10 * self.retry_initial_s + self.stall_s:
                    delay = self.retry_initial_s  # it ran for a while: start backing off afresh
                if await self._sleep(delay):
                    break
                delay = min(delay * 2, self.retry_max_s)
        finally:
            self.capturing = False
            self.app.metrics.mic_up.set(0)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when stopped."""
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
            return True
        except TimeoutError:
            return False

    def start(self) -> asyncio.Task:
        self._task = asyncio.create_task(self.run())
        return self._task

    async def stop(self, drain: bool = True, timeout: float = 10.0) -> None:
        """Stop capturing; with drain, the open utterance's final is broadcast before returning."""
        self._stop.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._task
            except (TimeoutError, Exception):
                pass
        if self.engine_stream is None:
            return
        if drain:  # idle after end: EndOfStream has been handed to _deliver (through the same loop queue)
            try:
                self.engine_stream.end()
                async with asyncio.timeout(timeout):
                    await asyncio.wrap_future(self.engine_stream.when_idle())
            except Exception:
                pass
        with contextlib.suppress(Exception):
            self.engine_stream.close()
        self.app.metrics.streams_active.dec()


def _quiet_close(stream) -> None:
    for name in ("stop", "close"):
        with contextlib.suppress(Exception):
            getattr(stream, name)()
