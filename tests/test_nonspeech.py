"""Non-speech is silence: ``transcribe`` and a real daemon print no word for silence, noise, hum, tones or
clicks, generated here with sox, with the shipped model and default settings.

Each run also carries one speech recording, which must come out as words: the check cannot pass by
recognizing nothing at all. Without the speech gate the model alone turns even digital silence into letters.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shipped_model_dir

from streamer.server.testing import wait_until_listening

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SPEECH = DATA / "hello_world.wav"


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sox") is None, reason="sox generates the signals"),
    pytest.mark.skipif(shipped_model_dir() is None, reason="the embedded model is not shipped"),
]

SECONDS = 6
# name -> sox effects after `sox -n -r 16000 -c 1 -b 16 OUT.wav`
SIGNALS: dict[str, list[str]] = {
    "digital_silence": ["trim", "0", str(SECONDS)],
    "floor_-80dBFS": ["synth", str(SECONDS), "whitenoise", "gain", "-n", "-80"],
    "floor_-60dBFS": ["synth", str(SECONDS), "pinknoise", "gain", "-n", "-60"],
    "floor_-45dBFS": ["synth", str(SECONDS), "brownnoise", "gain", "-n", "-45"],
    "white_noise": ["synth", str(SECONDS), "whitenoise", "gain", "-n", "-6"],
    "pink_noise": ["synth", str(SECONDS), "pinknoise", "gain", "-n", "-6"],
    "brown_noise": ["synth", str(SECONDS), "brownnoise", "gain", "-n", "-3"],
    "hum_50hz": ["synth", str(SECONDS), "sine", "50", "sine", "100", "sine", "150", "remix", "-", "gain", "-n", "-10"],
    "hum_60hz": ["synth", str(SECONDS), "sine", "60", "sine", "120", "sine", "180", "remix", "-", "gain", "-n", "-10"],
    "tone_440hz": ["synth", str(SECONDS), "sine", "440", "gain", "-n", "-6"],
    "tone_1khz": ["synth", str(SECONDS), "sine", "1000", "gain", "-n", "-6"],
    "dtmf": ["synth", str(SECONDS), "sine", "697", "sine", "1209", "remix", "-", "gain", "-n", "-6"],
    "sweep": ["synth", str(SECONDS), "sine", "100-4000", "gain", "-n", "-6"],
    "clicks": ["synth", str(SECONDS), "square", "4", "0", "0", "2", "highpass", "2000", "gain", "-n", "-3"],
    "fan": ["synth", str(SECONDS), "brownnoise", "synth", str(SECONDS), "sine", "mix", "120", "lowpass", "800",
            "gain", "-n", "-10"],
    "plucked_chord": ["synth", str(SECONDS), "pluck", "C4", "pluck", "E4", "pluck", "G4", "remix", "-",
                      "gain", "-n", "-6"],
}  # fmt: skip


@pytest.fixture(scope="module")
def signals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("nonspeech")
    paths = {}
    for name, effects in SIGNALS.items():
        path = out / f"{name}.wav"
        subprocess.run(
            ["sox", "-V1", "-n", "-r", "16000", "-c", "1", "-b", "16", str(path), *effects], check=True
        )
        paths[name] = path
    return paths


SPEECH_TEXT = "HELLO WORLD THIS IS A TEST"


def assert_speech_heard(text: str) -> None:
    """The speech file in the same run still comes through the gate: its text ends in "test" and spells
    the sentence within a CER of 0.2 (the interim model writes "HE LOW WORLD THIS IS A(T) TEST"); a gate
    that swallowed the speech, or half of it, fails this."""
    import jiwer

    assert text.upper().split()[-1:] == ["TEST"], text
    assert jiwer.cer(SPEECH_TEXT, text.upper()) <= 0.2, text


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def test_transcribe_prints_no_words_for_non_speech(signals: dict[str, Path]) -> None:
    files = [str(p) for p in signals.values()] + [str(SPEECH)]
    run = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "transcribe", "--json", *files],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = {json.loads(line)["file"]: json.loads(line) for line in run.stdout.splitlines()}
    assert_speech_heard(results[str(SPEECH)]["text"])
    heard = {Path(f).stem: r["text"] for f, r in results.items() if f != str(SPEECH) and r["text"]}
    assert heard == {}, f"words in non-speech: {heard}"
    assert all(not r["words"] for f, r in results.items() if f != str(SPEECH))


def test_daemon_emits_no_words_for_non_speech(signals: dict[str, Path]) -> None:
    from clients.stream_file import Session, file_samples, stream_samples, stream_url

    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = wait_until_listening(proc)[0]

        async def one(path: Path, slots: asyncio.Semaphore) -> list[dict]:
            events: list[dict] = []
            session = Session(url=stream_url(f"ws://127.0.0.1:{port}"), on_event=events.append, partials=True)
            async with slots, session:
                await stream_samples(session, file_samples(path).astype(np.float32))
            assert not session.errors, session.errors
            return events

        async def everything() -> list[list[dict]]:
            slots = asyncio.Semaphore(4)  # a few streams at a time: the test machine may be small and busy
            return await asyncio.gather(*(one(p, slots) for p in [*signals.values(), SPEECH]))

        *noise_events, speech_events = asyncio.run(everything())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a graceful stop slowed down by a busy machine is not the point
            proc.kill()
            proc.wait()
    speech_finals = " ".join(e["text"] for e in speech_events if e["type"] == "final")
    assert_speech_heard(speech_finals)
    heard = {}
    for name, events in zip(signals, noise_events, strict=True):
        texts = [e["text"] for e in events if e["type"] in ("partial", "final")]
        if any(texts) or any(e.get("words") for e in events):
            heard[name] = texts
    assert heard == {}, f"events with words for non-speech: {heard}"
