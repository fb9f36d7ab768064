"""How the file client reports a connection the server ends: against the real daemon on 127.0.0.1, with the
websockets release that ``pip install`` picks (the close code and reason come through its public API)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import soundfile
from test_clients_live import ROOT, Serve, _run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from streamer.server.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("close-tiny-model"))


@pytest.fixture(scope="module")
def noise_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("close-audio") / "noise.wav"
    rng = np.random.default_rng(0)
    soundfile.write(path, (rng.standard_normal(16000 * 30) * 0.1).astype(np.float32), 16000)
    return path


def _healthz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return json.load(response)


def _no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "Task exception was never retrieved" not in stderr, stderr


def test_stream_file_reports_the_shutdown_close_reason(tiny_model, noise_wav):
    """SIGTERM mid-file: the daemon finishes the utterance and closes 1001; the client says so and fails."""
    with Serve("--port", "0", "--model", str(tiny_model)) as serve:
        serve.wait_listening()
        # the decoder the daemon settled on is logged at the default verbosity (the tiny model has no LM)
        assert "finals decoder: greedy" in serve.log, serve.log
        client = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clients.stream_file",
                str(noise_wav),
                "--server",
                serve.url,
                "--realtime",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # streaming 30 s in real time: mid-file once the daemon has audio from it
        deadline = time.monotonic() + 120
        while _healthz(serve.port).get("streams_active", 0) < 1:
            assert client.poll() is None and time.monotonic() < deadline, client.communicate()
            time.sleep(0.2)
        time.sleep(1.0)
        assert client.poll() is None, client.communicate()
        assert serve.terminate() == 0, serve.log
        _out, err = client.communicate(timeout=60)
    assert client.returncode == 1, err
    assert "1001" in err and "server shutting down" in err, err
    _no_traceback(err)


def test_stream_file_at_the_vosk_port_says_so(tiny_model, noise_wav):
    """The vosk port answers our ``start`` with its own error shape and closes: a clear error at once."""
    with Serve("--port", "0", "--vosk-port", "0", "--model", str(tiny_model)) as serve:
        serve.wait_listening()
        vosk_url = next(m.group(1) for line in serve.lines if (m := re.search(r"vosk (ws://[\d.:]+)", line)))
        result = _run("clients.stream_file", str(noise_wav), "--server", vosk_url)
    assert result.returncode == 1, result.stderr
    assert "vosk" in result.stderr and "no 'ready'" not in result.stderr, result.stderr
    _no_traceback(result.stderr)
