"""A small protocol-v1 server that "recognizes" by counting audio, for testing the clients without a model.

``FakeServer`` runs on its own thread and event loop on 127.0.0.1 (ephemeral port) and speaks
docs/protocol.md: ``/v1/stream`` (start/ready, binary PCM, reset, end -> finals + end), ``/v1/listen``
(scripted captions), ``/`` and ``/static/<file>`` from clients/web/. Every ``utterance_s`` of received
audio becomes a final ``"utterance N"`` (with word timings); partials come every 0.2 s of audio.
The tests at the bottom check the fake itself, so that the client tests can trust it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import threading
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

WEB_ROOT = Path(__file__).resolve().parents[1] / "clients" / "web"


class FakeServer:
    def __init__(
        self,
        utterance_s: float = 1.0,
        token: str | None = None,
        fail_after_s: float | None = None,
        nonfatal_error_after_s: float | None = None,
        processing_delay_s: float = 0.0,
        listen_script: list[str] | None = None,
    ) -> None:
        self.utterance_s = utterance_s
        self.token = token
        self.fail_after_s = fail_after_s
        self.nonfatal_error_after_s = nonfatal_error_after_s
        self.processing_delay_s = processing_delay_s
        self.listen_script = listen_script or ["hello from the daemon microphone", "second caption line"]
        self.starts: list[dict[str, Any]] = []
        self.audio_bytes: list[int] = []  # per stream
        self.audio: list[bytearray] = []  # per stream: the first 60 s of PCM received
        self.ended_streams = 0
        self.http_requests: list[str] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeServer:
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-server")
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handler, "127.0.0.1", 0, process_request=self._http, compression=None, close_timeout=1
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._started.set()
            await self._stop.wait()

    # ------------------------------------------------------------------ HTTP
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        self.http_requests.append(path)
        if self.token is not None and path.startswith("/v1/"):
            query = request.path.split("?", 1)[1] if "?" in request.path else ""
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.token}" and f"token={self.token}" not in query.split("&"):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or bad token\n")
        if path in ("/v1/stream", "/v1/listen"):
            return None
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path == "/" or path.startswith("/static/"):
            name = "index.html" if path == "/" else path[len("/static/") :]
            file = (WEB_ROOT / name).resolve()
            if WEB_ROOT not in file.parents or not file.is_file():
                return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
            body = file.read_bytes()
            ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype.endswith("javascript"):
                ctype += "; charset=utf-8"
            headers = Headers(
                {"Content-Type": ctype, "Content-Length": str(len(body)), "Cache-Control": "no-store"}
            )
            return Response(200, "OK", headers, body)
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

    # ------------------------------------------------------------------ websocket
    async def _handler(self, ws: ServerConnection) -> None:
        path = ws.request.path.split("?", 1)[0]
        if path == "/v1/listen":
            await self._listen(ws)
        else:
            await self._stream(ws)

    async def _listen(self, ws: ServerConnection) -> None:
        t = 0.0
        with contextlib.suppress(Exception):
            while True:
                for line in self.listen_script:
                    words = line.split()
                    for i in range(1, len(words) + 1):
                        msg = {
                            "type": "partial",
                            "stream_id": "mic",
                            "text": " ".join(words[:i]),
                            "committed": " ".join(words[: i - 1]),
                            "tentative": words[i - 1],
                            "start": t,
                            "end": t + 0.3 * i,
                        }
                        await ws.send(json.dumps(msg))
                        await asyncio.sleep(0.05)
                    final = {
                        "type": "final",
                        "stream_id": "mic",
                        "text": line,
                        "words": [],
                        "start": t,
                        "end": t + 0.3 * len(words),
                    }
                    await ws.send(json.dumps(final))
                    t += 0.3 * len(words) + 0.5
                    await asyncio.sleep(0.3)

    async def _stream(self, ws: ServerConnection) -> None:
        sid = f"s{len(self.starts) + 1}"
        try:
            first = await asyncio.wait_for(ws.recv(), 10)
            start = json.loads(first)
            assert start.get("type") == "start", start
        except Exception:
            await self._error(ws, sid, "not_started", "first message must be start", close=1008)
            return
        self.starts.append(start)
        rate = int(start.get("sample_rate", 16000))
        width = 2 if start.get("encoding", "pcm_s16le") == "pcm_s16le" else 4
        partials = start.get("partials", True)
        await ws.send(
            json.dumps(
                {"type": "ready", "version": 1, "stream_id": sid, "sample_rate": rate, "model": "fake"}
            )
        )
        index = len(self.audio_bytes)
        self.audio_bytes.append(0)
        self.audio.append(bytearray())
        received_s = 0.0  # audio received
        processed_s = 0.0  # audio "recognized" (lags by processing_delay_s per second of audio)
        utt_start = 0.0
        count = 0
        last_partial = 0.0
        nonfatal_sent = False

        async def final(end: float) -> None:
            nonlocal utt_start, count
            if end - utt_start < 0.05:
                return
            count += 1
            text = f"utterance {count}"
            mid = (utt_start + end) / 2
            words = [
                {"word": "utterance", "start": utt_start, "end": mid, "confidence": 0.9},
                {"word": str(count), "start": mid, "end": end, "confidence": 0.8},
            ]
            await ws.send(
                json.dumps(
                    {
                        "type": "final",
                        "stream_id": sid,
                        "text": text,
                        "words": words,
                        "start": round(utt_start, 3),
                        "end": round(end, 3),
                    }
                )
            )
            utt_start = end

        try:
            async for message in ws:
                if isinstance(message, bytes):
                    if len(message) % width:
                        await self._error(ws, sid, "bad_audio", "odd frame", close=1007)
                        return
                    self.audio_bytes[index] += len(message)
                    if len(self.audio[index]) < 60 * rate * width:
                        self.audio[index] += message
                    received_s += len(message) / width / rate
                    if self.processing_delay_s:
                        await asyncio.sleep(self.processing_delay_s * len(message) / width / rate)
                    processed_s = received_s
                    if self.fail_after_s is not None and received_s >= self.fail_after_s:
                        await self._error(ws, sid, "overload", "fake overload", close=1013)
                        return
                    if (
                        self.nonfatal_error_after_s is not None
                        and not nonfatal_sent
                        and received_s >= self.nonfatal_error_after_s
                    ):
                        nonfatal_sent = True
                        await ws.send(
                            json.dumps(
                                {
                                    "type": "error",
                                    "stream_id": sid,
                                    "code": "overload",
                                    "message": "dropped 0.5 s of audio",
                                    "fatal": False,
                                }
                            )
                        )
                    while processed_s - utt_start >= self.utterance_s:
                        await final(utt_start + self.utterance_s)
                    if partials and processed_s - last_partial >= 0.2 and processed_s > utt_start:
                        last_partial = processed_s
                        await ws.send(
                            json.dumps(
                                {
                                    "type": "partial",
                                    "stream_id": sid,
                                    "text": f"utterance {count + 1}",
                                    "committed": "utterance",
                                    "tentative": str(count + 1),
                                    "start": round(utt_start, 3),
                                    "end": round(processed_s, 3),
                                }
                            )
                        )
                    continue
                msg = json.loads(message)
                if msg.get("type") == "reset":
                    await final(processed_s)
                elif msg.get("type") == "end":
                    await final(processed_s)
                    await ws.send(json.dumps({"type": "end", "stream_id": sid}))
                    self.ended_streams += 1
                    await ws.close(1000)
                    return
        except Exception:
            return

    async def _error(self, ws, sid, code, message, close) -> None:
        with contextlib.suppress(Exception):
            await ws.send(
                json.dumps(
                    {"type": "error", "stream_id": sid, "code": code, "message": message, "fatal": True}
                )
            )
            await ws.close(close, code)


# ----------------------------------------------------------------------------- the fake's own tests


@pytest.fixture
def fake_server():
    with FakeServer() as server:
        yield server


def test_fake_server_stream_roundtrip(fake_server):
    from websockets.sync.client import connect

    with connect(fake_server.url + "/v1/stream") as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        assert json.loads(ws.recv(5))["type"] == "ready"
        ws.send(b"\0\0" * 16000 * 2 + b"\0\0" * 8000)  # 2.5 s
        ws.send(json.dumps({"type": "end"}))
        events = []
        while True:
            event = json.loads(ws.recv(5))
            events.append(event)
            if event["type"] == "end":
                break
    finals = [e for e in events if e["type"] == "final"]
    assert [f["text"] for f in finals] == ["utterance 1", "utterance 2", "utterance 3"]
    assert finals[-1]["start"] == 2.0 and finals[-1]["end"] == 2.5


def test_fake_server_serves_page_and_404(fake_server):
    import urllib.error
    import urllib.request

    if (WEB_ROOT / "index.html").is_file():
        with urllib.request.urlopen(fake_server.http_url + "/", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/html")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(fake_server.http_url + "/static/../../pyproject.toml", timeout=5)
    assert info.value.code == 404
    info.value.close()
