"""Shared load-generation client code: speech audio, real-time websocket streamers, server processes.

Used by ``bench/bench_load.py`` (load/soak) and ``tests/test_scaleout_nginx.py`` (two daemons behind
nginx). Everything talks to 127.0.0.1 only and every loop is bounded in count and time.

A :class:`StreamClient` speaks the native protocol (``/v1/stream``, docs/protocol.md): ``start``, then
real-time PCM frames of looped utterances separated by silence, then ``end``; it records, per utterance
sent, whether a ``final`` covered it, and for every ``partial``/``final`` the latency from the moment the
audio up to the event's ``end`` was sent to the moment the event arrived.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Streaming speech recognition turns audio into text while you are still talking.",
    "Six spoons of fresh snow peas and five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her on Wednesday.",
    "The weather today is cloudy with a chance of rain in the afternoon.",
    "Testing one two three, this is a load test of the recognition daemon.",
)


# ------------------------------------------------------------------------------------------ audio


def synthesize_clips(directory: str | Path, sentences: Sequence[str] = SENTENCES) -> list[np.ndarray]:
    """Speak each sentence with espeak-ng (or flite) into ``directory``; 16 kHz int16 arrays.

    Falls back to a deterministic speech-like signal (amplitude-modulated harmonics) when no synthesizer
    is installed, so the load path still runs; the caller is told via the return length staying equal.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clips: list[np.ndarray] = []
    for i, text in enumerate(sentences):
        path = directory / f"utt{i:02d}.wav"
        samples = None
        try:
            from streamer.server.testing import synthesize

            samples = synthesize(text, path)
        except Exception:  # no synthesizer, or it failed: synthetic stand-in
            samples = None
        if samples is None or samples.size < RATE // 4:
            samples = babble(1.5 + 0.25 * i, seed=i)
            _write_wav(path, samples)
        clips.append(np.asarray(samples, dtype="<i2"))
    return clips


def babble(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like int16 audio: syllable-rate amplitude modulation of a few harmonics plus noise."""
    rng = np.random.RandomState(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 110 + 40 * rng.rand()
    voice = sum(np.sin(2 * np.pi * f0 * k * t + rng.rand() * 6) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.rand() * 6), 0, None) ** 0.5
    signal_ = voice * envelope + 0.05 * rng.randn(t.size)
    return (signal_ / np.abs(signal_).max() * 12000).astype("<i2")


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


@dataclasses.dataclass
class Utterance:
    start_s: float  # stream time of the first sample of speech
    end_s: float  # stream time just after the last sample of speech


class AudioPlan:
    """An endless deterministic sequence: clip, silence, clip, silence, ... starting at clip ``offset``."""

    def __init__(self, clips: Sequence[np.ndarray], gap_s: float = 1.5, offset: int = 0) -> None:
        self.clips = [np.asarray(c, dtype="<i2") for c in clips]
        self.gap = np.zeros(int(gap_s * RATE), dtype="<i2")
        self.offset = offset

    def pieces(self):
        """Yield (int16 samples, is_speech) forever."""
        i = self.offset
        while True:
            yield self.clips[i % len(self.clips)], True
            yield self.gap, False
            i += 1


# ------------------------------------------------------------------------------------------ client


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclasses.dataclass
class ClientResult:
    index: int
    ready: bool = False
    stream_id: str = ""
    upstream: str = ""  # X-Upstream-Addr response header when a proxy adds it
    held: bool = False  # stayed connected for the whole run and got "end" after sending "end"
    got_end: bool = False
    close_code: int | None = None
    audio_s: float = 0.0
    utterances_sent: int = 0
    utterances_finalized: int = 0  # sent utterances overlapped by at least one final
    finals: int = 0
    partials: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)  # "code: message" of error events
    failure: str = ""  # exception / protocol violation that ended the client
    partial_latency: list[float] = dataclasses.field(default_factory=list)
    final_latency: list[float] = dataclasses.field(default_factory=list)
    last_event_t: float = 0.0  # monotonic time of the last partial/final
    events_after: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def lost_finals(self) -> int:
        return self.utterances_sent - self.utterances_finalized


class StreamClient:
    """One real-time native-protocol client.

    ``run()`` streams until ``stop_at`` (monotonic seconds) or ``stop_event`` is set, then finishes the
    utterance it is in plus the trailing silence, sends ``end`` and waits (bounded) for the remaining
    finals and ``end``. Utterances cut by the stop are not counted as sent (only whole utterances are).
    """

    def __init__(
        self,
        url: str,
        plan: AudioPlan,
        index: int = 0,
        *,
        frame_ms: float = 100.0,
        realtime: float = 1.0,
        token: str | None = None,
        end_timeout_s: float = 60.0,
        compression: str | None = None,
        open_timeout_s: float = 30.0,
        text_format: str = "raw",
    ) -> None:
        self.url = url
        self.text_format = text_format  # the start message's "format": raw | readable finals
        self.plan = plan
        self.frame = max(1, int(RATE * frame_ms / 1000))
        self.realtime = realtime  # 1.0 = real time; 2.0 = twice as fast
        self.token = token
        self.end_timeout_s = end_timeout_s
        self.compression = compression
        self.open_timeout_s = open_timeout_s
        self.result = ClientResult(index)
        self._sent_s: list[float] = []  # cumulative stream seconds after each frame
        self._sent_t: list[float] = []  # monotonic time each frame was sent
        self._utterances: list[Utterance] = []
        self._final_spans: list[tuple[float, float]] = []
        self.ws: Any = None

    # -- events --------------------------------------------------------------------------------------
    def _sent_time_of(self, stream_s: float) -> float | None:
        i = bisect.bisect_left(self._sent_s, stream_s - 1e-3)
        return self._sent_t[i] if i < len(self._sent_t) else None

    def _on_message(self, message: str | bytes, now: float) -> str:
        r = self.result
        if isinstance(message, bytes):
            r.failure = r.failure or "binary message from server"
            return "binary"
        obj = json.loads(message)
        kind = obj.get("type", "?")
        r.events_after[kind] = r.events_after.get(kind, 0) + 1
        if kind in ("partial", "final"):
            end = float(obj.get("end", 0.0))
            sent = self._sent_time_of(end)
            if kind == "partial":
                r.partials += 1
                if sent is not None:
                    r.partial_latency.append(max(0.0, now - sent))
            else:
                r.finals += 1
                self._final_spans.append((float(obj.get("start", 0.0)), end))
                if sent is not None:
                    r.final_latency.append(max(0.0, now - sent))
            r.last_event_t = now
        elif kind == "error":
            r.errors.append(f"{obj.get('code')}: {obj.get('message')}")
        elif kind == "end":
            r.got_end = True
        return kind

    async def _reader(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.ws:
                self._on_message(message, time.monotonic())
        except ConnectionClosed:
            pass

    # -- main ----------------------------------------------------------------------------------------
    async def run(self, stop_at: float, stop_event: asyncio.Event | None = None) -> ClientResult:
        from websockets.asyncio.client import connect

        r = self.result
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        reader: asyncio.Task | None = None
        try:
            async with connect(
                self.url,
                additional_headers=headers,
                compression=self.compression,
                open_timeout=self.open_timeout_s,
                max_size=1 << 22,
            ) as ws:
                self.ws = ws
                if ws.response is not None:
                    r.upstream = ws.response.headers.get("X-Upstream-Addr", "")
                await ws.send(
                    json.dumps(
                        {
                            "type": "start",
                            "sample_rate": RATE,
                            "encoding": "pcm_s16le",
                            "format": self.text_format,
                        }
                    )
                )
                async with asyncio.timeout(self.open_timeout_s):
                    ready = json.loads(await ws.recv())
                if ready.get("type") != "ready":
                    r.failure = f"expected ready, got {ready}"
                    return r
                r.ready = True
                r.stream_id = ready.get("stream_id", "")
                reader = asyncio.create_task(self._reader())
                await self._send_audio(ws, reader, stop_at, stop_event)
                if reader.done():  # the server closed on us mid-stream
                    r.close_code = ws.close_code
                    r.failure = r.failure or f"closed mid-stream (code {ws.close_code})"
                    return r
                await ws.send(json.dumps({"type": "end"}))
                try:
                    async with asyncio.timeout(self.end_timeout_s):
                        await asyncio.shield(reader)
                except TimeoutError:
                    r.failure = r.failure or f"no end within {self.end_timeout_s:g} s after sending end"
                r.close_code = ws.close_code
        except Exception as exc:  # connection refused / reset / handshake failure
            r.failure = r.failure or f"{type(exc).__name__}: {exc}"
            if self.ws is not None:
                r.close_code = self.ws.close_code
        finally:
            if reader is not None and not reader.done():
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            self._score()
        return r

    async def _send_audio(self, ws, reader: asyncio.Task, stop_at: float, stop_event) -> None:
        r = self.result
        frame = self.frame
        t0 = time.monotonic()
        pos = 0  # samples sent
        for samples, speech in self.plan.pieces():
            # only whole utterances, each followed by its silence, are sent; stop before the next one
            if speech and (time.monotonic() >= stop_at or (stop_event is not None and stop_event.is_set())):
                return
            start_s = pos / RATE
            data = samples.tobytes()
            for i in range(0, samples.size, frame):
                chunk = data[2 * i : 2 * (i + frame)]
                due = t0 + (pos / RATE) / self.realtime
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if reader.done():
                    return
                await ws.send(chunk)
                pos += len(chunk) // 2
                self._sent_s.append(pos / RATE)
                self._sent_t.append(time.monotonic())
                r.audio_s = pos / RATE
            if speech:
                self._utterances.append(Utterance(start_s, pos / RATE))
                r.utterances_sent += 1

    def _score(self) -> None:
        r = self.result
        spans = sorted(self._final_spans)
        done = 0
        for u in self._utterances:
            if any(s < u.end_s + 0.25 and e > u.start_s - 0.25 for s, e in spans):
                done += 1
        r.utterances_finalized = done
        r.held = r.ready and r.got_end and not r.failure and (r.close_code in (1000, None))


# ------------------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m streamer.cli serve`` on 127.0.0.1 as a subprocess; stdout/stderr to a log file."""

    def __init__(
        self,
        model: str | None,
        *,
        port: int = 0,
        extra: Sequence[str] = (),
        log_path: str | Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.model = model
        self.requested_port = port
        self.extra = list(extra)
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(suffix=".log")[1])
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> ServerProcess:
        """Launch and wait until it listens."""
        return self.launch().wait_listening(timeout)

    def launch(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "streamer.cli", "serve", "--host", "127.0.0.1", "--port",
               str(self.requested_port)]  # fmt: skip
        if self.model:
            cmd += ["--model", str(self.model)]
        cmd += self.extra
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(self.env or {})}
        env.pop("NOTIFY_SOCKET", None)
        env.pop("LISTEN_FDS", None)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_listening(self, timeout: float = 180.0) -> ServerProcess:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", text)
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode} during start:\n{text[-3000:]}")
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server not listening after {timeout:g} s:\n{self.log_path.read_text()[-3000:]}")

    def rss_kib(self) -> int | None:
        return rss_kib(self.pid) if self.proc is not None and self.proc.poll() is None else None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        with contextlib.suppress(Exception):
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def http_get(url: str, timeout: float = 10.0, token: str | None = None) -> tuple[int, str]:
    assert url.startswith(("http://127.0.0.1", "http://localhost")), url  # loopback only
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[key] = float(value)
    return out


def metric(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the series of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def histogram_quantile(metrics: dict[str, float], name: str, q: float, **labels: str) -> float:
    """Upper bound of the bucket holding quantile ``q`` of a Prometheus histogram (nan if empty)."""
    buckets: list[tuple[float, float]] = []
    for key, value in metrics.items():
        if not key.startswith(name + "_bucket{"):
            continue
        if not all(f'{k}="{v}"' in key for k, v in labels.items()):
            continue
        le = re.search(r'le="([^"]+)"', key)
        if le:
            buckets.append((float(le.group(1)), value))
    if not buckets:
        return float("nan")
    buckets.sort()
    total = buckets[-1][1]
    if total <= 0:
        return float("nan")
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def serving(base: str, timeout: float = 5.0) -> bool:
    """Does the daemon at ``base`` (host:port) answer /healthz with 200 (accepting new streams)?"""
    try:
        status, _ = http_get(f"http://{base}/healthz", timeout=timeout)
    except OSError:
        return False
    return status == 200


async def wait_not_serving(base: str, timeout: float = 30.0) -> bool:
    """Wait (bounded) until the daemon stops accepting new streams (draining or gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not await asyncio.to_thread(serving, base, 2.0):
            return True
        await asyncio.sleep(0.05)
    return False
