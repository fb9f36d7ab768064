"""clients.caption: the renderer's terminal output, and whole runs against the fake protocol server."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from test_clients_fakeserver import FakeServer

from clients.caption import CLEAR_LINE, DIM_ITALIC, RESET, CaptionRenderer

ROOT = Path(__file__).resolve().parents[1]


def test_partials_rewrite_the_line_and_finals_scroll():
    out = io.StringIO()
    r = CaptionRenderer(out, live=True, color=True, width=80)
    r({"type": "partial", "committed": "hello", "tentative": "wor"})
    r({"type": "partial", "committed": "hello world", "tentative": ""})
    r({"type": "final", "text": "hello world", "start": 0.0, "end": 1.0})
    text = out.getvalue()
    assert text.startswith(CLEAR_LINE + "hello " + DIM_ITALIC + "wor" + RESET)
    assert CLEAR_LINE + "hello world" + CLEAR_LINE in text  # the partial line is wiped before the final
    assert text.endswith("hello world" + RESET + "\n")
    assert text.count("\n") == 1
    assert r.last_final == "hello world"


def test_long_partial_stays_on_one_line():
    out = io.StringIO()
    r = CaptionRenderer(out, live=True, color=False, width=40)
    r({"type": "partial", "committed": " ".join(["committed"] * 10), "tentative": "tentative words"})
    line = out.getvalue()[len(CLEAR_LINE) :]
    assert len(line) <= 39 and line.startswith("…") and line.endswith("tentative words")
    out.seek(0)
    out.truncate(0)
    r({"type": "partial", "committed": "", "tentative": "x" * 100})
    assert len(out.getvalue()[len(CLEAR_LINE) :]) <= 39


def test_not_a_terminal_prints_only_finals_with_timestamps():
    out = io.StringIO()
    r = CaptionRenderer(out, timestamps="stream")
    assert not r.live and not r.color
    r({"type": "partial", "committed": "a", "tentative": "b"})
    r({"type": "final", "text": "", "start": 1.0, "end": 1.2})  # empty finals are not printed
    r({"type": "final", "text": "good morning", "start": 65.4, "end": 66.0})
    assert out.getvalue() == "[01:05] good morning\n"


@pytest.fixture(scope="module")
def noise_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "noise.wav"
    rng = np.random.default_rng(1)
    soundfile.write(path, (rng.standard_normal(16000 * 12) * 0.05).astype(np.float32), 16000)
    return path


def _caption(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    return subprocess.Popen(
        [sys.executable, "-m", "clients.caption", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_file_through_server(noise_wav):
    with FakeServer(utterance_s=5.0) as server:
        proc = _caption(
            ["--server", server.url, "--file", str(noise_wav), "--speed", "0", "--timestamps", "stream"]
        )
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == ["[00:00] utterance 1", "[00:05] utterance 2", "[00:10] utterance 3"]


def test_ctrl_c_sends_end_and_prints_the_last_final(noise_wav):
    with FakeServer(utterance_s=5.0) as server:
        proc = _caption(["--server", server.url, "--file", str(noise_wav)])
        deadline = time.monotonic() + 30
        while not server.audio_bytes or server.audio_bytes[0] < 16000 * 2 * 1.5:  # 1.5 s streamed
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert server.ended_streams == 1
    assert proc.returncode == 0, err
    assert out == "utterance 1\n"  # the open utterance was finished and printed
    assert "stopping" in err


def test_server_refusal_and_fatal_error(noise_wav):
    with FakeServer(token="t") as server:
        proc = _caption(["--server", server.url, "--file", str(noise_wav), "--speed", "0"])
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "HTTP 401" in err
    with FakeServer(fail_after_s=1.0) as server:
        proc = _caption(["--server", server.url, "--file", str(noise_wav), "--speed", "0"])
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "overload" in err


def test_list_devices_runs():
    proc = _caption(["--list-devices"])
    out, err = proc.communicate(timeout=60)
    # a machine without sound cards reports none (exit 1); either way no traceback
    assert proc.returncode in (0, 1) and "Traceback" not in err, err
    assert out or err


def test_standalone_with_a_bad_model_or_decoder_says_why(noise_wav, tmp_path):
    for args, reason in (
        (["--model.path", str(tmp_path / "missing")], "cannot start the recognizer"),
        (["--decoder.method", "viterbi"], "bad value for decoder.method"),
    ):
        proc = _caption(["--standalone", *args, "--file", str(noise_wav), "--speed", "0"])
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and reason in err and "Traceback" not in err, err
