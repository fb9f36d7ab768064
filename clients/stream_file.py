"""Stream an audio file to a conformer-streamer daemon and print what it recognizes.

    conformer-stream-file talk.flac                        # finals as text lines, fast
    conformer-stream-file talk.wav --realtime --partials   # paced like a live source
    conformer-stream-file talk.ogg --format srt -o talk.srt
    conformer-stream-file talk.wav --format json           # one JSON event per line

(``python -m clients.stream_file`` runs the same without the installed script.)

Any format libsndfile reads (wav, flac, ogg, ...; m4a, MP4, WebM through ffmpeg when it is installed) at
any rate; it is converted to 16 kHz mono and sent as ``pcm_s16le`` in 100 ms frames. Without ``--realtime`` the file goes as fast as the server keeps up:
the client stays at most ``--max-lead`` seconds of audio ahead of what the server has reported, so a long
file never overflows the server's per-stream queue (which would drop audio).

Exit status: 0 on success, 1 on a server error (an ``error`` event, a refused or broken connection),
2 on a usage or file error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

log = logging.getLogger("clients.stream_file")

SAMPLE_RATE = 16_000
DEFAULT_SERVER = "ws://127.0.0.1:2700"
EXIT_OK, EXIT_SERVER_ERROR, EXIT_USAGE = 0, 1, 2


class ServerError(Exception):
    """The server reported an error, refused the connection or closed it before the stream ended."""

    def __init__(self, message: str, code: str = "connection") -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------- audio


def file_samples(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The file as mono float32 at ``sample_rate`` (`model.audio.load_audio`, imported on first use so that
    a client streaming a microphone never loads the model package)."""
    from model.audio import load_audio

    return load_audio(path, sample_rate)


def to_pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1] -> little-endian int16 bytes (clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def pcm_frames(samples: np.ndarray, frame_s: float = 0.1) -> Iterable[bytes]:
    step = max(1, int(SAMPLE_RATE * frame_s))
    for i in range(0, samples.size, step):
        yield to_pcm16(samples[i : i + step])


# ------------------------------------------------------------------------------------------ protocol


def stream_url(server: str, path: str = "/v1/stream", token: str | None = None) -> str:
    """``ws://host:port`` (or ``http(s)://``) -> the endpoint URL; an explicit path is kept."""
    if "://" not in server:
        server = "ws://" + server
    parts = urllib.parse.urlsplit(server)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"server URL must be ws://, wss://, http:// or https://, got {server!r}")
    url_path = parts.path if parts.path not in ("", "/") else path
    query = parts.query
    if token:
        query = "&".join(q for q in (query, urllib.parse.urlencode({"token": token})) if q)
    return urllib.parse.urlunsplit((scheme, parts.netloc, url_path, query, ""))


def close_description(ws: Any) -> str | None:
    """``"code 1001 (server shutting down)"`` for a closed websocket; None while it is still open."""
    code = ws.close_code  # websockets' public API: None while open, 1006 when no close frame came
    if code is None:
        return None
    if code == 1006:
        return "no close frame (connection lost)"
    reason = ws.close_reason
    return f"code {code}" + (f" ({reason})" if reason else "")


@dataclass
class Session:
    """One ``/v1/stream`` (or ``/v1/listen``) conversation: start, audio, end; events to ``on_event``.

    ``on_event`` is called on the event loop for every server message (dicts as in docs/protocol.md).
    ``progress`` is the latest audio time the server has reported (partials'/finals' ``end``).
    """

    url: str
    on_event: Callable[[dict[str, Any]], None] = lambda event: None
    token: str | None = None
    sample_rate: int = SAMPLE_RATE
    encoding: str = "pcm_s16le"
    partials: bool = True
    words: bool = True
    format: str = "raw"  # finals: "raw" | "readable" (punctuated and true-cased by the server)
    open_timeout: float = 10.0
    listen: bool = False  # /v1/listen: no start message, nothing to send
    grammar: list[str] | None = None  # only these phrases (docs/protocol.md, "Grammars and hotwords")
    progress: float = 0.0
    progress_at: float = field(default_factory=time.monotonic)  # when ``progress`` last advanced
    ready: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ws: Any = None
        self._receiver: asyncio.Task | None = None
        self._ended = asyncio.Event()
        self._progressed = asyncio.Event()
        self._ready = asyncio.Event()
        self.close_reason: str | None = None
        self.foreign = False  # the server answered in another protocol (vosk-server's, say)

    async def __aenter__(self) -> Session:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._ws = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.open_timeout,
                max_size=1 << 22,
                compression=None,
            )
        except InvalidStatus as error:
            raise ServerError(
                f"server refused {self.url}: HTTP {error.response.status_code}", "refused"
            ) from None
        except (OSError, TimeoutError, InvalidHandshake) as error:
            raise ServerError(f"cannot connect to {self.url}: {error}") from None
        self.progress_at = time.monotonic()
        self._receiver = asyncio.create_task(self._receive(), name="session-receiver")
        if self.listen:
            return
        start: dict[str, Any] = {
            "type": "start",
            "version": 1,
            "sample_rate": self.sample_rate,
            "encoding": self.encoding,
            "partials": self.partials,
            "words": self.words,
            "format": self.format,
        }
        if self.grammar is not None:
            start["grammar"] = self.grammar
        await self._ws.send(json.dumps(start))
        ready_task = asyncio.create_task(self._ready.wait())
        _done, _ = await asyncio.wait(
            {ready_task, self._receiver}, timeout=self.open_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        ready_task.cancel()
        if not self._ready.is_set():
            self._raise_failure(f"no 'ready' from the server within {self.open_timeout:.0f} s")

    def _raise_failure(self, default: str) -> None:
        hint = (
            f"; {self.url} does not speak the conformer-streamer protocol (a vosk-server port?)"
            if self.foreign
            else ""
        )
        if self.errors:
            error = self.errors[-1]
            raise ServerError(
                f"server error {error.get('code')}: {error.get('message')}{hint}",
                error.get("code") or "error",
            )
        if self.close_reason:
            raise ServerError(f"connection closed: {self.close_reason}{hint}")
        raise ServerError(default + hint)

    async def _raise_after_close(self, default: str) -> None:
        """Wait briefly for the server's close frame, so that the error carries its code and reason."""
        await asyncio.wait({self._receiver}, timeout=2)  # type: ignore[arg-type]
        self._raise_failure(default)

    async def _receive(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    continue
                try:
                    event = json.loads(message)
                except ValueError:
                    log.warning("ignoring a non-JSON message from the server: %.80r", message)
                    continue
                if not isinstance(event, dict):
                    continue
                kind = event.get("type")
                if kind is None and "error" in event:  # vosk-server's error shape: not our protocol
                    self.foreign = True
                    event = {"type": "error", "code": event.get("code"), "message": event["error"]}
                    kind = "error"
                if kind == "ready":
                    self.ready = event
                    self._ready.set()
                elif kind in ("partial", "final"):
                    end = event.get("end")
                    if isinstance(end, int | float) and end > self.progress:
                        self.progress = float(end)
                        self.progress_at = time.monotonic()
                        self._progressed.set()
                    if kind == "final":
                        self.finals.append(event)
                elif kind == "error":
                    self.errors.append(event)
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("event handler failed")
                if kind == "end":
                    self._ended.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_reason = close_description(self._ws)
            self._progressed.set()

    @property
    def closed(self) -> bool:
        return self._receiver is None or self._receiver.done()

    def check(self) -> None:
        """Raise ServerError if the server has reported a fatal error or dropped the connection."""
        if any(e.get("fatal", True) for e in self.errors) or (self.closed and not self._ended.is_set()):
            self._raise_failure("connection closed")

    async def send_audio(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        self.check()
        if self._ended.is_set():  # the server ended the stream before we did: it is shutting down
            await self._raise_after_close("the server ended the stream")
        try:
            await self._ws.send(data)
        except ConnectionClosed:
            await self._raise_after_close("connection closed while sending audio")

    async def wait_progress(self, at_least: float, stall_s: float = 1.0) -> None:
        """Wait until the server reports audio up to ``at_least`` s, or nothing new for ``stall_s``."""
        while self.progress < at_least and not self.closed:
            self._progressed.clear()
            try:
                await asyncio.wait_for(self._progressed.wait(), timeout=stall_s)
            except TimeoutError:
                return

    async def reset(self) -> None:
        await self._ws.send(json.dumps({"type": "reset"}))

    async def end(self, timeout: float = 60.0) -> None:
        """Send ``end`` and wait for the server's ``end`` (the remaining finals arrive first)."""
        from websockets.exceptions import ConnectionClosed

        self.check()
        if self._ended.is_set():  # the server ended the stream before we did: it is shutting down
            await self._raise_after_close("the server ended the stream")
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(json.dumps({"type": "end"}))
        await self.wait_end(timeout)

    async def wait_end(self, timeout: float | None = None) -> None:
        ended = asyncio.create_task(self._ended.wait())
        await asyncio.wait({ended, self._receiver}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)  # type: ignore[arg-type]
        ended.cancel()
        if not self._ended.is_set():
            self._raise_failure(f"no 'end' from the server within {timeout} s")
        if any(e.get("fatal", True) for e in self.errors):
            self._raise_failure("server error")

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), timeout=5)
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._receiver


# ------------------------------------------------------------------------------------------- output


def srt_time(seconds: float) -> str:
    ms = max(0, round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def _cues_for_final(final: dict[str, Any], max_chars: int) -> list[tuple[float, float, str]]:
    """Split one final into subtitle cues of at most ``max_chars`` at word boundaries (word timings)."""
    text = str(final.get("text", "")).strip()
    start, end = float(final.get("start", 0.0)), float(final.get("end", 0.0))
    words = final.get("words") or []
    if len(text) <= max_chars or not words:
        return [(start, end, text)] if text else []
    cues: list[tuple[float, float, str]] = []
    current: list[dict[str, Any]] = []
    for word in words:
        candidate = " ".join(w["word"] for w in [*current, word])
        if current and len(candidate) > max_chars:
            cues.append((current[0]["start"], current[-1]["end"], " ".join(w["word"] for w in current)))
            current = []
        current.append(word)
    if current:
        cues.append((current[0]["start"], current[-1]["end"], " ".join(w["word"] for w in current)))
    # cues cover the utterance without gaps: first starts at the final's start, last ends at its end
    cues[0] = (min(start, cues[0][0]), cues[0][1], cues[0][2])
    cues[-1] = (cues[-1][0], max(end, cues[-1][1]), cues[-1][2])
    return cues


def _wrap_two_lines(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    words, best = text.split(), None
    for i in range(1, len(text.split())):  # the most balanced break
        a, b = " ".join(words[:i]), " ".join(words[i:])
        score = max(len(a), len(b))
        if best is None or score < best[0]:
            best = (score, a + "\n" + b)
    return best[1] if best else text


def to_srt(finals: Iterable[dict[str, Any]], max_chars: int = 84, line_width: int = 42) -> str:
    """SubRip subtitles from finals (their ``start``/``end``; long ones split using word timings)."""
    blocks = []
    index = 0
    for final in finals:
        for start, end, text in _cues_for_final(final, max_chars):
            index += 1
            end = max(end, start + 0.001)
            blocks.append(
                f"{index}\n{srt_time(start)} --> {srt_time(end)}\n{_wrap_two_lines(text, line_width)}\n"
            )
    return "\n".join(blocks)


class Writer:
    """Writes finals as they arrive (text, json) or all at the end (srt)."""

    def __init__(self, fmt: str, out: TextIO, partials: bool = False, status: TextIO | None = None) -> None:
        self.fmt = fmt
        self.out = out
        self.partials = partials
        self.status = status  # live partial line (a terminal) for --format text
        self.finals: list[dict[str, Any]] = []
        self._partial_shown = False

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "final":
            self.finals.append(event)
            self._clear_partial()
            if self.fmt == "text":
                if event.get("text"):
                    self.out.write(event["text"] + "\n")
            elif self.fmt == "json":
                self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.out.flush()
        elif kind == "partial" and self.partials:
            if self.fmt == "json":
                self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
                self.out.flush()
            elif self.fmt == "text" and self.status is not None:
                text = event.get("text") or " ".join(
                    t for t in (event.get("committed"), event.get("tentative")) if t
                )
                self.status.write("\r\x1b[K\x1b[2m" + text[-150:] + "\x1b[0m")
                self.status.flush()
                self._partial_shown = True
        elif kind == "error":
            self._clear_partial()
            fatal = "fatal" if event.get("fatal", True) else "warning"
            print(f"server {fatal}: {event.get('code')}: {event.get('message')}", file=sys.stderr)

    def _clear_partial(self) -> None:
        if self._partial_shown and self.status is not None:
            self.status.write("\r\x1b[K")
            self.status.flush()
            self._partial_shown = False

    def finish(self) -> None:
        self._clear_partial()
        if self.fmt == "srt":
            self.out.write(to_srt(self.finals))
            self.out.flush()


# ---------------------------------------------------------------------------------------------- run


async def stream_samples(
    session: Session,
    samples: np.ndarray,
    realtime: bool = False,
    frame_s: float = 0.1,
    max_lead_s: float = 5.0,
) -> None:
    """Send ``samples`` (16 kHz float32) through an open session, then end it and wait for the finals."""
    t0 = time.monotonic()
    sent_s = 0.0
    for frame in pcm_frames(samples, frame_s):
        if realtime:
            delay = t0 + sent_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            # Don't outrun the server: it drops audio queued beyond limits.max_queued_s. Its position is
            # what it last reported, advanced at real time since then (it reports nothing in silence).
            while not session.closed:
                estimate = session.progress + (time.monotonic() - session.progress_at)
                if sent_s - estimate <= max_lead_s:
                    break
                await session.wait_progress(session.progress + 1e-6, stall_s=sent_s - max_lead_s - estimate)
        await session.send_audio(frame)
        sent_s += len(frame) / 2 / SAMPLE_RATE
    await session.end(timeout=max(60.0, 2.0 * samples.size / SAMPLE_RATE))


async def run_file(args: argparse.Namespace, samples: np.ndarray, writer: Writer) -> int:
    url = stream_url(args.server)
    session = Session(
        url=url,
        on_event=writer,
        token=args.token,  # an Authorization header: unlike ?token=, it stays out of access logs
        partials=True,  # progress reports pace the upload even when partials aren't shown
        words=True,
        format=finals_format(args),
        grammar=getattr(args, "phrases", None),
    )
    try:
        async with session:
            await stream_samples(session, samples, realtime=args.realtime, max_lead_s=args.max_lead)
    except ServerError as error:
        writer.finish()
        print(f"stream_file: {error}", file=sys.stderr)
        return EXIT_SERVER_ERROR
    writer.finish()
    return EXIT_SERVER_ERROR if session.errors else EXIT_OK


def finals_format(args: argparse.Namespace) -> str:
    """What the finals should look like: people read text and subtitles, programs parse JSON."""
    if getattr(args, "finals", None):
        return args.finals
    return "raw" if args.format == "json" else "readable"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conformer-stream-file",
        description="Stream an audio file to a conformer-streamer server and print the transcript.",
    )
    parser.add_argument("file", type=Path, help="audio file (wav, flac, ogg, ... any sample rate)")
    parser.add_argument("--server", default=DEFAULT_SERVER, help=f"server URL (default {DEFAULT_SERVER})")
    parser.add_argument(
        "--token",
        default=os.environ.get("CONFORMER_STREAMER_TOKEN"),
        help="bearer token, when the server requires one (default: $CONFORMER_STREAMER_TOKEN)",
    )
    parser.add_argument("--realtime", action="store_true", help="send at the pace of a live source")
    parser.add_argument("--format", choices=("text", "json", "srt"), default="text", help="output format")
    parser.add_argument(
        "--finals",
        choices=("readable", "raw"),
        default=None,
        help="readable: punctuated and true-cased finals; raw: as recognized "
        "(default: readable for text and srt, raw for json)",
    )
    parser.add_argument("-o", "--output", type=Path, help="write here instead of standard output")
    parser.add_argument(
        "--partials",
        action="store_true",
        help="also show partial results (a live line on a terminal for text; events for json)",
    )
    parser.add_argument(
        "--max-lead",
        type=float,
        default=5.0,
        help="seconds of audio to stay ahead of the server's progress when not --realtime (default 5)",
    )
    parser.add_argument(
        "--grammar",
        type=Path,
        metavar="FILE",
        help="only these phrases, one per line ('#' comments): each utterance is one of them or [unk]",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def read_phrases(path: Path) -> list[str]:
    """A grammar file: one phrase per line; blank lines and ``#`` comments skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    try:
        stream_url(args.server)
    except ValueError as error:
        print(f"stream_file: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        samples = file_samples(args.file)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"stream_file: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not math.isfinite(args.max_lead) or args.max_lead <= 0:
        print("stream_file: --max-lead must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        args.phrases = read_phrases(args.grammar) if args.grammar else None
    except (OSError, UnicodeDecodeError) as error:
        print(f"stream_file: --grammar: {error}", file=sys.stderr)
        return EXIT_USAGE
    out_file = None
    try:
        if args.output:
            out_file = open(args.output, "w", encoding="utf-8")  # noqa: SIM115
        out = out_file or sys.stdout
        status = sys.stderr if (args.partials and args.format == "text" and sys.stderr.isatty()) else None
        writer = Writer(args.format, out, partials=args.partials, status=status)
        return asyncio.run(run_file(args, samples, writer))
    except KeyboardInterrupt:
        return 130
    finally:
        if out_file is not None:
            out_file.close()


if __name__ == "__main__":
    sys.exit(main())
