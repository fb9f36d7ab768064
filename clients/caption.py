"""Live captions of a microphone in the terminal.

    python -m clients.caption                                  # via the daemon on ws://127.0.0.1:2700
    python -m clients.caption --server ws://asr.lan:2700 --timestamps stream
    python -m clients.caption --standalone                     # run the recognizer in this process
    python -m clients.caption --list-devices
    python -m clients.caption --device "USB Audio" --standalone --model.path ./my-model

The open utterance is redrawn in place on the current line (``\\r`` + clear to end of line): the
committed words plainly, the tentative look-ahead dim and italic. When the utterance is final it is
printed solid and scrolls up. Ctrl-C stops the microphone, ends the stream, prints the last final and
exits (a second Ctrl-C exits at once). Without a terminal on stdout only finals are printed.

Audio: 16 kHz mono int16 blocks of 100 ms from sounddevice (PortAudio). A device that cannot open at
16 kHz is opened at its own rate and resampled. ``--file`` plays an audio file in real time instead of
the microphone (demos, tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from clients.stream_file import (
    DEFAULT_SERVER,
    SAMPLE_RATE,
    ServerError,
    Session,
    file_samples,
    stream_url,
    to_pcm16,
)

log = logging.getLogger("clients.caption")

BLOCK_S = 0.1
DIM_ITALIC = "\x1b[2;3m"
BOLD = "\x1b[1m"
RED = "\x1b[31m"
RESET = "\x1b[0m"
CLEAR_LINE = "\r\x1b[K"


def _fmt_clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class CaptionRenderer:
    """Draws events on a terminal: partials rewrite the current line, finals scroll.

    ``timestamps``: "none", "stream" (``[mm:ss]`` from the start of the stream) or "wall" (local time the
    final arrived). ``color`` None = only when ``out`` is a terminal and ``$NO_COLOR`` is unset.
    """

    def __init__(
        self,
        out: TextIO | None = None,
        timestamps: str = "none",
        color: bool | None = None,
        live: bool | None = None,
        width: int | None = None,
    ) -> None:
        self.out = out or sys.stdout
        is_tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.live = is_tty if live is None else live  # draw partials in place
        self.color = (is_tty and "NO_COLOR" not in os.environ) if color is None else color
        self.timestamps = timestamps
        self._width = width
        self._partial_on_screen = False
        self.last_final: str | None = None
        self.finals = 0
        self._lock = threading.Lock()

    @property
    def width(self) -> int:
        return self._width or shutil.get_terminal_size((80, 24)).columns

    def _style(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.color and text else text

    def _stamp(self, event: dict[str, Any]) -> str:
        if self.timestamps == "stream":
            return f"[{_fmt_clock(float(event.get('start', 0.0)))}] "
        if self.timestamps == "wall":
            return time.strftime("[%H:%M:%S] ")
        return ""

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            kind = event.get("type")
            if kind == "partial":
                self.partial(str(event.get("committed", "")), str(event.get("tentative", "")))
            elif kind == "final":
                self.final(event)
            elif kind == "error":
                fatal = event.get("fatal", True)
                self.message(
                    f"{'error' if fatal else 'warning'}: {event.get('code')}: {event.get('message')}"
                )

    def partial(self, committed: str, tentative: str) -> None:
        if not self.live:
            return
        # One screen line only: a wrapped line cannot be rewritten with \r, so show the tail.
        room = max(10, self.width - 1)
        plain = " ".join(t for t in (committed, tentative) if t)
        if len(plain) > room:
            cut = len(plain) - (room - 1)
            if cut >= len(committed) + (1 if committed else 0):
                committed, tentative = "", "…" + plain[cut:]
            else:
                committed, tentative = "…" + committed[cut + 1 :], tentative
        line = committed
        if tentative:
            line += (" " if committed else "") + self._style(DIM_ITALIC, tentative)
        self.out.write(CLEAR_LINE + line)
        self.out.flush()
        self._partial_on_screen = True

    def _clear(self) -> None:
        if self._partial_on_screen:
            self.out.write(CLEAR_LINE)
            self._partial_on_screen = False

    def final(self, event: dict[str, Any]) -> None:
        text = str(event.get("text", "")).strip()
        self._clear()
        if text:
            self.out.write(self._stamp(event) + self._style(BOLD, text) + "\n")
            self.last_final = text
            self.finals += 1
        self.out.flush()

    def message(self, text: str, stream: TextIO | None = None) -> None:
        """A status or error line that must not be overwritten by the next partial."""
        self._clear()
        self.out.flush()
        stream = stream or sys.stderr
        stream.write((self._style(RED, text) if stream is self.out else text) + "\n")
        stream.flush()


# ------------------------------------------------------------------------------------------- sources


def list_devices(out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        import sounddevice as sd
    except (ImportError, OSError) as error:
        print(f"caption: sounddevice/PortAudio unavailable: {error}", file=sys.stderr)
        return 1
    devices = sd.query_devices()
    try:
        default_in = sd.default.device[0]
    except Exception:
        default_in = -1
    inputs = [(i, d) for i, d in enumerate(devices) if d.get("max_input_channels", 0) > 0]
    if not inputs:
        print("no input devices found", file=out)
        return 1
    for i, d in inputs:
        mark = "*" if i == default_in else " "
        host = sd.query_hostapis(d["hostapi"])["name"]
        print(
            f"{mark} {i:3d}  {d['name']}  ({host}, {d['max_input_channels']} ch, "
            f"{d['default_samplerate']:.0f} Hz)",
            file=out,
        )
    print("(* = default; pass the number or part of the name to --device)", file=out)
    return 0


def _parse_device(value: str | None) -> int | str | None:
    if value is None or value == "":
        return None
    return int(value) if value.isdigit() else value


class MicSource:
    """sounddevice capture -> 16 kHz int16 blocks of ``BLOCK_S`` on a thread-safe queue."""

    def __init__(self, device: int | str | None = None) -> None:
        self.device = device
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=600)  # 60 s
        self._stream: Any = None
        self._resampler: Any = None
        self.overflows = 0

    def _callback_16k(self, indata, frames, time_info, status) -> None:  # PortAudio thread
        if status and status.input_overflow:
            self.overflows += 1
        self._put(bytes(indata))

    def _callback_resample(self, indata, frames, time_info, status) -> None:
        if status and status.input_overflow:
            self.overflows += 1
        mono = np.frombuffer(indata, dtype=np.float32)
        self._put(to_pcm16(self._resampler.process(mono)))

    def _put(self, data: bytes) -> None:
        if not data:
            return
        try:
            self.queue.put_nowait(data)
        except queue.Full:  # the consumer is stuck: drop the oldest block rather than block PortAudio
            with contextlib.suppress(queue.Empty):
                self.queue.get_nowait()
            with contextlib.suppress(queue.Full):
                self.queue.put_nowait(data)

    def start(self) -> MicSource:
        import sounddevice as sd

        try:
            self._stream = sd.RawInputStream(
                samplerate=SAMPLE_RATE,
                blocksize=int(SAMPLE_RATE * BLOCK_S),
                device=self.device,
                channels=1,
                dtype="int16",
                callback=self._callback_16k,
            )
        except sd.PortAudioError:
            # The device can't do 16 kHz (raw hw: devices): capture at its rate and resample here.
            from model.audio import StreamResampler

            info = sd.query_devices(self.device, "input")
            rate = int(info["default_samplerate"])
            log.info("capturing at %d Hz and resampling to %d Hz", rate, SAMPLE_RATE)
            self._resampler = StreamResampler(rate, SAMPLE_RATE)
            self._stream = sd.RawInputStream(
                samplerate=rate,
                blocksize=int(rate * BLOCK_S),
                device=self.device,
                channels=1,
                dtype="float32",
                callback=self._callback_resample,
            )
        self._stream.start()
        return self

    def stop(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.stop()
                self._stream.close()
            self._stream = None
        self.queue.put(None)

    async def blocks(self, stop: asyncio.Event) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            data = await loop.run_in_executor(None, _get_with_timeout, self.queue, 0.2)
            if data is None:
                if self._stream is None:
                    return
                continue
            yield data


def _get_with_timeout(q: queue.Queue, timeout: float) -> bytes | None:
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        return None


class FileSource:
    """An audio file played like a microphone: 100 ms blocks at ``speed`` x real time (0 = no pacing)."""

    def __init__(self, path: Path, speed: float = 1.0) -> None:
        self.samples = file_samples(path)
        self.speed = speed

    def start(self) -> FileSource:
        return self

    def stop(self) -> None:
        pass

    async def blocks(self, stop: asyncio.Event) -> AsyncIterator[bytes]:
        step = int(SAMPLE_RATE * BLOCK_S)
        t0 = time.monotonic()
        for i in range(0, self.samples.size, step):
            if stop.is_set():
                return
            if self.speed > 0:
                delay = t0 + (i / SAMPLE_RATE) / self.speed - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        return
            else:
                await asyncio.sleep(0)
            yield to_pcm16(self.samples[i : i + step])


# ----------------------------------------------------------------------------------------- recognizers


async def caption_via_server(
    source: Any, renderer: CaptionRenderer, url: str, stop: asyncio.Event, token: str | None = None
) -> int:
    session = Session(url=url, on_event=renderer, token=token, partials=True, words=False, format="readable")
    try:
        async with session:
            async for block in source.blocks(stop):
                await session.send_audio(block)
            source.stop()
            await session.end(timeout=30)
    except ServerError as error:
        renderer.message(f"caption: {error}")
        return 1
    return 1 if session.errors else 0


async def caption_standalone(
    source: Any, renderer: CaptionRenderer, settings: Any, stop: asyncio.Event
) -> int:
    from streamer import engine as engine_module
    from streamer import events

    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    failed: list[dict[str, Any]] = []

    punctuator = None
    if getattr(getattr(settings, "format", None), "readable", False):
        from streamer.readable import format_final, load_punctuator

        try:
            punctuator = load_punctuator(settings.format.punct_model)
        except (OSError, ValueError) as error:
            renderer.message(f"caption: no readable captions ({error})")

    def on_event(event: Any) -> None:  # the engine's worker thread
        if punctuator is not None and isinstance(event, events.Final):
            event = format_final(event, punctuator)
        data = events.to_dict(event)
        if data.get("type") == "error":
            failed.append(data)
        loop.call_soon_threadsafe(renderer, data)
        if data.get("type") == "end" or (data.get("type") == "error" and data.get("fatal", True)):
            loop.call_soon_threadsafe(ended.set)

    renderer.message("loading the model…")
    try:
        engine = engine_module.RecognitionEngine(settings)
    except (OSError, RuntimeError, ValueError) as error:  # no such model, a bad decoder setting
        renderer.message(f"caption: cannot start the recognizer: {error}")
        return 2
    await loop.run_in_executor(None, engine.start)
    try:
        stream = engine.open_stream(
            on_event, sample_rate=SAMPLE_RATE, encoding="pcm_s16le", partials=True, words=False
        )
        renderer.message("listening (Ctrl-C to stop)")
        try:
            async for block in source.blocks(stop):
                if ended.is_set():
                    break
                stream.accept(block)
            source.stop()
            if not ended.is_set():
                stream.end()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), 30)
        finally:
            stream.close()
    finally:
        await loop.run_in_executor(None, lambda: engine.stop(drain=True))
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clients.caption",
        description="Live terminal captions from a microphone.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--server", default=DEFAULT_SERVER, help=f"daemon URL (default {DEFAULT_SERVER})")
    mode.add_argument(
        "--standalone", action="store_true", help="run the recognition engine in this process (no daemon)"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CONFORMER_STREAMER_TOKEN"),
        help="bearer token, when the server requires one (default: $CONFORMER_STREAMER_TOKEN)",
    )
    parser.add_argument("--device", help="input device: number or part of the name (see --list-devices)")
    parser.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    parser.add_argument(
        "--timestamps",
        choices=("none", "stream", "wall"),
        default="none",
        help="prefix finals with stream time [mm:ss] or wall-clock time [HH:MM:SS]",
    )
    parser.add_argument("--no-color", action="store_true", help="no ANSI styling (also: $NO_COLOR)")
    parser.add_argument("--file", type=Path, help="caption an audio file instead of the microphone")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="with --file: playback speed (1 = real time, 0 = unpaced)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    # --config FILE and --section.field flags for --standalone, exactly as `serve` takes them
    from streamer import config

    config.add_arguments(parser)
    return parser


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, on_first: Callable[[], None]):
    presses = 0

    def handler() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            on_first()
            stop.set()
        else:
            os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)


async def amain(args: argparse.Namespace) -> int:
    renderer = CaptionRenderer(timestamps=args.timestamps, color=False if args.no_color else None)
    stop = asyncio.Event()
    _install_signals(
        asyncio.get_running_loop(), stop, lambda: renderer.message("stopping: finishing the last utterance…")
    )
    if args.file is not None:
        source: Any = FileSource(args.file, speed=args.speed)
    else:
        try:
            source = MicSource(_parse_device(args.device)).start()
        except Exception as error:  # PortAudioError, ValueError (no such device), OSError (no PortAudio)
            renderer.message(f"caption: cannot open the microphone: {error}")
            return 2
    try:
        if args.standalone:
            from streamer import config

            try:
                settings = config.from_args(args)
            except (ValueError, OSError) as error:
                renderer.message(f"caption: {error}")
                return 2
            return await caption_standalone(source, renderer, settings, stop)
        url = stream_url(args.server)
        if args.file is None:
            renderer.message(f"listening via {args.server} (Ctrl-C to stop)")
        return await caption_via_server(source, renderer, url, stop, token=args.token)
    finally:
        source.stop()
        if getattr(source, "overflows", 0):
            renderer.message(f"note: {source.overflows} audio overflows (the machine was too slow)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    if args.list_devices:
        return list_devices()
    if not args.standalone:
        try:
            stream_url(args.server)
        except ValueError as error:
            print(f"caption: {error}", file=sys.stderr)
            return 2
    if args.file is not None and not args.file.is_file():
        print(f"caption: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
