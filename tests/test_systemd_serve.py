"""sd_notify, watchdog and socket activation through the real `conformer-streamer serve` process.

The test plays the service manager: it binds the NOTIFY_SOCKET datagram socket, sets WATCHDOG_USEC,
(optionally) passes a listening socket as fd 3 with LISTEN_FDS, and checks what the daemon does:
READY=1 only once it accepts connections, WATCHDOG=1 pings at half the interval, and on SIGTERM
STOPPING=1 while open utterances are finished (their finals and ``end`` reach the client) before exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from test_clients_live import Serve, speech_wav, tiny_model  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


class Notifications:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []

    def poll(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, key: str, timeout: float) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while True:
            for t, message in self.messages:
                if key in message.split("\n"):
                    return t, message
            assert time.monotonic() < deadline, f"no {key} within {timeout} s; got {self.messages}"
            self.poll(min(0.2, max(0.01, deadline - time.monotonic())))

    def count(self, key: str) -> int:
        return sum(key in m.split("\n") for _, m in self.messages)

    def close(self) -> None:
        self.sock.close()


def _recv_json(ws, timeout: float) -> dict:
    return json.loads(ws.recv(timeout))


def test_serve_ready_watchdog_stopping_and_graceful_sigterm(tmp_path, tiny_model, speech_wav):  # noqa: F811
    from websockets.sync.client import connect

    notes = Notifications(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": notes.path, "WATCHDOG_USEC": "1000000"}  # ping every 0.5 s
    with Serve("--port", "0", "--model", str(tiny_model), env=env) as serve:
        _, ready = notes.wait_for("READY=1", 120)
        assert "STATUS=listening on ws://127.0.0.1:" in ready
        port = int(ready.rsplit(":", 1)[1].split()[0].strip(","))
        # READY=1 means listening: a connection right now must succeed
        socket.create_connection(("127.0.0.1", port), timeout=5).close()

        notes.poll(2.2)
        pings = notes.count("WATCHDOG=1")
        assert 3 <= pings <= 7, notes.messages

        # an open stream with an unfinished utterance when SIGTERM arrives
        samples = np.asarray(soundfile.read(str(speech_wav), dtype="int16")[0]).tobytes()
        events: list[dict] = []
        with connect(f"ws://127.0.0.1:{port}/v1/stream", open_timeout=10) as ws:
            ws.send(json.dumps({"type": "start", "sample_rate": 16000, "partials": True}))
            assert _recv_json(ws, 10)["type"] == "ready"
            ws.send(samples[: 2 * 16000 * 2])  # 2 s of speech, no "end"
            deadline = time.monotonic() + 30
            while not any(e["type"] == "partial" for e in events):  # the audio is being recognized
                events.append(_recv_json(ws, max(0.1, deadline - time.monotonic())))
            serve.proc.send_signal(signal.SIGTERM)
            try:
                while True:
                    events.append(_recv_json(ws, 30))
                    if events[-1]["type"] == "end":
                        break
            except Exception as error:  # the connection must not drop before "end"
                pytest.fail(f"stream closed before its end: {error!r}; events {events}\n{serve.log}")
        assert serve.proc.wait(60) == 0, serve.log
        kinds = [e["type"] for e in events]
        assert "final" in kinds[kinds.index("partial") :], kinds  # the open utterance got its final
        assert kinds[-1] == "end"
        notes.poll(0.3)
        notes.wait_for("STOPPING=1", 1)
        assert notes.count("READY=1") == 1
    notes.close()


def test_serve_socket_activation(tmp_path, tiny_model, speech_wav):  # noqa: F811
    from websockets.sync.client import connect

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    notes = Notifications(tmp_path / "notify.sock")
    dup = os.dup2(listener.fileno(), 50, inheritable=False)

    def as_fd3() -> None:  # what systemd does between fork and exec
        os.dup2(dup, 3)

    env = {"NOTIFY_SOCKET": notes.path, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
    try:
        # connect before the daemon runs: socket activation queues it in the backlog
        early = socket.create_connection(("127.0.0.1", port), timeout=5)
        with Serve(
            "--port",
            str(port),  # in use by the passed socket: binding it instead would fail
            "--model",
            str(tiny_model),
            env=env,
            shell_prefix="export LISTEN_PID=$$;",
            preexec_fn=as_fd3,
            close_fds=False,
        ) as serve:
            _, ready = notes.wait_for("READY=1", 120)
            assert f"127.0.0.1:{port}" in ready, ready
            with connect(f"ws://127.0.0.1:{port}/v1/stream", open_timeout=10) as ws:
                ws.send(json.dumps({"type": "start"}))
                assert _recv_json(ws, 10)["type"] == "ready"
                ws.send(json.dumps({"type": "end"}))
                while _recv_json(ws, 30)["type"] != "end":
                    pass
            early.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            early.settimeout(10)
            assert early.recv(100).startswith(b"HTTP/1.1 200"), serve.log
            assert serve.terminate() == 0, serve.log
    finally:
        early.close()
        os.close(dup)
        listener.close()
        notes.close()
