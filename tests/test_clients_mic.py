"""clients.caption capturing a real (virtual) microphone through sounddevice/PortAudio.

A private PulseAudio server with a null sink plays a synthesized sentence; its monitor is the
"microphone" (ALSA ``pulse`` device). Skipped where PulseAudio or the ALSA pulse plugin is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_clients_fakeserver import FakeServer

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "the quick brown fox jumps over the lazy dog"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("pulseaudio") and shutil.which("paplay") and shutil.which("espeak-ng")),
        reason="needs pulseaudio, paplay and espeak-ng",
    ),
]


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    """A private PulseAudio daemon; yields the environment for its clients."""
    home = tmp_path_factory.mktemp("pulse")
    sock = home / "pulse.sock"
    env = {
        **os.environ,
        "HOME": str(home),
        "PULSE_RUNTIME_PATH": str(home / "run"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "PULSE_SERVER": f"unix:{sock}",
    }
    (home / "run").mkdir()
    daemon = subprocess.Popen(
        [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disable-shm=yes",
            "--use-pid-file=no", "--system=no",
            "-L", f"module-native-protocol-unix socket={sock} auth-anonymous=1",
            "-L", "module-null-sink sink_name=spk rate=48000",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.skip("PulseAudio did not start here")
            time.sleep(0.2)
        subprocess.run(["pactl", "set-default-sink", "spk"], env=env, check=True)
        subprocess.run(["pactl", "set-default-source", "spk.monitor"], env=env, check=True)
        yield env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(5)


@pytest.fixture
def playing(pulse, tmp_path):
    """The sentence looping into the null sink (so its monitor "hears" it)."""
    wav = tmp_path / "sentence.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), SENTENCE], check=True)
    player = subprocess.Popen(
        ["sh", "-c", f'while :; do paplay --device=spk "{wav}"; sleep 0.3; done'],
        env=pulse, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield pulse
    with contextlib.suppress(ProcessLookupError):
        os.killpg(player.pid, signal.SIGTERM)
    player.wait(10)


def _caption(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "clients.caption", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_list_devices_shows_pulse(pulse):
    proc = _caption(pulse, "--list-devices")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "pulse" in out


def test_microphone_capture_streams_16k_pcm(playing):
    with FakeServer(utterance_s=1.0) as server:
        proc = _caption(playing, "--server", server.url, "--device", "pulse")
        deadline = time.monotonic() + 60
        while not server.audio_bytes or server.audio_bytes[0] < 3 * 32000:  # 3 s of 16 kHz s16
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no audio from the microphone"
            time.sleep(0.1)
        t0, b0 = time.monotonic(), server.audio_bytes[0]
        time.sleep(2.0)
        rate = (server.audio_bytes[0] - b0) / 2 / (time.monotonic() - t0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert server.ended_streams == 1
        pcm = np.frombuffer(bytes(server.audio[0]), dtype="<i2").astype(np.float32) / 32768
    assert 12000 < rate < 20000, rate  # real time at 16 kHz (loose: a loaded CI machine)
    assert np.sqrt(np.mean(pcm**2)) > 0.01  # it heard the speech, not silence
    assert server.starts[0]["sample_rate"] == 16000
    assert out.splitlines()[0] == "utterance 1"
