"""The clients against the real daemon (`conformer-streamer serve` in a subprocess on 127.0.0.1).

With a tiny random model (``streamer.server.testing.make_tiny_model``) these check the protocol end to
end — the text is gibberish, so only its presence is asserted. Text correctness with the trained
model: test_clients_trained.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from model.hub import default_model_dir

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "the quick brown fox jumps over the lazy dog"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from streamer.server.testing import make_tiny_model

    directory = tmp_path_factory.getbasetemp() / "clients-tiny-model"
    if not (directory / "config.json").exists():
        make_tiny_model(directory)
    return directory


class Serve:
    """``conformer-streamer serve`` in a subprocess; ``port`` parsed from its "listening on" line."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, shell_prefix: str = "", **popen
    ) -> None:
        cmd = [sys.executable, "-m", "streamer.cli", "serve", "--host", "127.0.0.1", *args]
        if shell_prefix:  # e.g. "LISTEN_PID=$$" (the pid survives exec)
            cmd = ["sh", "-c", shell_prefix + ' exec "$@"', "sh", *cmd]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            **popen,
        )
        self.lines: list[str] = []
        self.listening = threading.Event()
        self.port: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"listening on \w+://[\d.]+:(\d+)", line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self.listening.set()

    def wait_listening(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while not self.listening.wait(0.2):
            assert self.proc.poll() is None, "serve exited:\n" + self.log
            assert time.monotonic() < deadline, "serve did not listen in time:\n" + self.log
        assert self.port is not None
        return self.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "\n".join(self.lines[-60:])

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate()


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    from streamer.server.testing import synthesize

    path = tmp_path_factory.mktemp("live-audio") / "sentence.wav"
    if synthesize(SENTENCE + ". " + SENTENCE, path) is None:  # espeak-ng absent: noise bursts instead
        rng = np.random.default_rng(3)
        audio = np.concatenate([rng.standard_normal(16000) * 0.2, np.zeros(16000)] * 3).astype(np.float32)
        soundfile.write(path, audio, 16000)
    return path


TOKEN = "sekrit"


@pytest.fixture(scope="module")
def daemon(tiny_model):
    with Serve("--port", "0", "--model", str(tiny_model), "--server.token", TOKEN) as serve:
        serve.wait_listening()
        yield serve


def _run(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_stream_file_json_against_daemon(daemon, speech_wav):
    result = _run(
        "clients.stream_file", str(speech_wav), "--server", daemon.url, "--token", TOKEN, "--format", "json"
    )
    assert result.returncode == 0, result.stderr + daemon.log
    finals = [json.loads(line) for line in result.stdout.splitlines()]
    assert finals and all(f["type"] == "final" for f in finals)
    duration = soundfile.info(str(speech_wav)).duration
    for f in finals:
        assert 0 <= f["start"] <= f["end"] <= duration + 0.5
        assert all(w["start"] <= w["end"] for w in f["words"])
    assert any(f["text"] for f in finals)


def test_stream_file_srt_against_daemon(daemon, speech_wav, tmp_path):
    out = tmp_path / "out.srt"
    result = _run(
        "clients.stream_file",
        str(speech_wav),
        "--server",
        daemon.url,
        "--token",
        TOKEN,
        "--format",
        "srt",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    cues = out.read_text().strip().split("\n\n")
    assert cues and cues[0].startswith("1\n00:00:")


def test_caption_file_against_daemon(daemon, speech_wav):
    result = _run(
        "clients.caption", "--server", daemon.url, "--token", TOKEN, "--file", str(speech_wav), "--speed", "0"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()  # finals only (stdout is not a terminal)
    assert "\x1b" not in result.stdout


def test_stream_file_reports_daemon_refusal(daemon, speech_wav):
    refused = _run("clients.stream_file", str(speech_wav), "--server", daemon.url)
    assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
    wrong = _run("clients.caption", "--server", daemon.url, "--token", "nope", "--file", str(speech_wav))
    assert wrong.returncode == 1 and "401" in wrong.stderr, wrong.stderr


@pytest.mark.skipif(
    (default_model_dir() / "config.json").exists(),
    reason="test_clients_trained.py covers it with the model",
)
def test_caption_standalone(tiny_model, speech_wav):
    result = _run(
        "clients.caption",
        "--standalone",
        "--model.path",
        str(tiny_model),
        "--file",
        str(speech_wav),
        "--speed",
        "0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
