"""``conformer-streamer serve`` as a real process: configuration, readiness, SIGTERM drain, exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer import cli
from streamer.commands import serve
from streamer.server.testing import make_tiny_model, wait_until_listening

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(300)


def parse(argv):
    parser, subs = cli.build_parser()
    serve.add_arguments(subs["serve"])
    return serve.settings_from_args(parser.parse_args(["serve", *argv]))


def test_config_file_flags_and_aliases(tmp_path):
    toml = tmp_path / "daemon.toml"
    toml.write_text(
        '[server]\nhost = "0.0.0.0"\nport = 9000\ntoken = "t"\nallowed_origins = ["https://a"]\n'
        "[limits]\nmax_connections = 5\nidle_timeout_s = 3\n"
    )
    s = parse(["--config", str(toml)])
    assert (s.server.host, s.server.port, s.server.token, s.server.allowed_origins) == (
        "0.0.0.0",
        9000,
        "t",
        ["https://a"],
    )
    assert (s.limits.max_connections, s.limits.idle_timeout_s, s.server.mic) == (5, 3.0, None)
    s = parse(
        [
            "--config",
            str(toml),
            "--port",
            "9100",
            "--limits.max_connections",
            "7",
            "--server.vosk_port",
            "2800",
        ]
    )
    assert (s.server.port, s.limits.max_connections, s.server.vosk_port, s.server.host) == (
        9100,
        7,
        2800,
        "0.0.0.0",
    )
    s = parse(["--host", "::1", "--vosk-port", "2701", "--mic", "--model", "/m"])
    assert (s.server.host, s.server.vosk_port, s.server.mic, s.model.path) == ("::1", 2701, "", "/m")
    assert parse(["--mic", "3"]).server.mic == "3"
    defaults = parse([])
    assert defaults.server.host == "127.0.0.1" and defaults.server.port == 2700  # loopback by default
    # "none" is the word for "no LM", not "unset" (which means the model's own LM)
    assert parse([]).decoder.lm_path == ""
    assert parse(["--decoder.lm_path", "none"]).decoder.lm_path == "none"
    no_lm = tmp_path / "no-lm.toml"
    no_lm.write_text('[decoder]\nlm_path = "none"\n')
    assert parse(["--config", str(no_lm)]).decoder.lm_path == "none"
    with pytest.raises(ValueError, match="unknown option"):
        bad = tmp_path / "bad.toml"
        bad.write_text("[server]\nprot = 1\n")
        parse(["--config", str(bad)])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.mark.slow
def test_sigterm_finishes_open_utterances_then_exits_0(model_dir, tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.1)
    # socket activation as systemd does it: the listening socket is fd 3, LISTEN_PID is the server's pid
    listener = socket.create_server(("127.0.0.1", 0))
    activated_port = listener.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": notify_path,
        "PYTHONUNBUFFERED": "1",
        "LISTEN_FDS": "1",
        "LISTEN_FDNAMES": "http",
    }
    proc = subprocess.Popen(
        ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh",
         sys.executable, "-m", "streamer.cli", "serve", "--vosk-port", "0", "--model", str(model_dir),
         "--batching.max_wait_ms", "5", "--model.threads", "1",
         # the random tiny model is fed noise: the energy gate lets it through, Silero (rightly) would not
         "--streaming.vad", "energy"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        pass_fds=(3,), preexec_fn=lambda: os.dup2(listener.fileno(), 3),
    )  # fmt: skip
    listener.close()
    try:
        ports = wait_until_listening(proc)
        assert len(ports) == 2 and ports[0] == activated_port, ports
        states = []
        while True:
            try:
                states.append(notify.recv(4096).decode())
            except TimeoutError:
                break
        assert any("READY=1" in s for s in states), states

        async def client():
            rng = np.random.RandomState(9)
            audio = (rng.randn(16000 * 2) * 4000).astype("<i2").tobytes()
            async with connect(f"ws://127.0.0.1:{ports[0]}/v1/stream") as ws:
                await ws.send(json.dumps({"type": "start"}))
                assert json.loads(await ws.recv())["type"] == "ready"
                for i in range(0, len(audio), 3200):
                    await ws.send(audio[i : i + 3200])
                first = json.loads(await ws.recv())
                assert first["type"] in ("partial", "final")
                proc.send_signal(signal.SIGTERM)  # mid-utterance: no "end" from the client
                messages = [first]
                try:
                    async for m in ws:
                        messages.append(json.loads(m))
                except ConnectionClosed:
                    pass
                return messages, ws.close_code

        messages, close_code = asyncio.run(client())
        kinds = [m["type"] for m in messages]
        assert "final" in kinds and kinds[-1] == "end", kinds  # the open utterance's final was sent
        assert close_code == 1001
        assert proc.wait(60) == 0
        states.append(notify.recv(4096).decode())
        assert any("STOPPING=1" in s for s in states), states
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
        proc.stdout.close()
        proc.stderr.close()
