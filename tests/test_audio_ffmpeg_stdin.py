"""Formats libsndfile cannot read go through ffmpeg (real ffmpeg-made files), its absence is named with the
package to install, and ``transcribe -`` reads a whole file from standard input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from model.audio import AudioLoadError, load_audio, load_audio_bytes

ROOT = Path(__file__).resolve().parent.parent
WAV = ROOT / "tests" / "data" / "hello_world.wav"
FORMATS = {"m4a": ["-c:a", "aac"], "mp4": ["-c:a", "aac"], "webm": ["-c:a", "libopus"]}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[str, Path]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not installed (scripts/setup.sh test installs it)")
    out = tmp_path_factory.mktemp("ffmpeg-made")
    files = {}
    for ext, codec in FORMATS.items():
        files[ext] = out / f"hello_world.{ext}"
        subprocess.run(
            [ffmpeg, "-nostdin", "-v", "error", "-i", str(WAV), *codec, str(files[ext])],
            check=True,
            timeout=120,
        )
    return files


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 4096) -> float:
    """The highest normalized correlation of ``a`` and ``b`` over shifts up to ``max_lag`` samples (codecs
    add encoder delay)."""
    n = min(len(a), len(b)) - max_lag
    x = a[max_lag : max_lag + n]
    best = 0.0
    for lag in range(-max_lag, max_lag + 1, 4):
        y = b[max_lag + lag : max_lag + lag + n]
        if len(y) < n:
            continue
        best = max(best, float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)))
    return best


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_formats_libsndfile_cannot_read_decode_through_ffmpeg(encoded, ext):
    with pytest.raises(soundfile.LibsndfileError):  # so this is the ffmpeg path
        soundfile.read(encoded[ext])
    reference = load_audio(WAV)
    decoded = load_audio(encoded[ext])
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) - len(reference)) < 0.1 * 16000, (len(decoded), len(reference))
    assert best_correlation(reference, decoded) > 0.9
    assert np.array_equal(load_audio_bytes(encoded[ext].read_bytes()), decoded)


def test_without_ffmpeg_the_error_names_the_package(encoded, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ffmpeg on the PATH
    with pytest.raises(AudioLoadError, match=r"install the 'ffmpeg' package \(apt-get install ffmpeg\)"):
        load_audio(encoded["m4a"])
    with pytest.raises(AudioLoadError, match=r"standard input.*apt-get install ffmpeg"):
        load_audio_bytes(encoded["webm"].read_bytes(), name="standard input")


def test_not_audio_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.m4a"
    junk.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioLoadError, match="cannot read audio"):
        load_audio(junk)
    with pytest.raises(AudioLoadError, match="no audio data"):
        load_audio_bytes(b"")


@pytest.mark.slow
def test_transcribe_reads_standard_input(encoded):
    """``transcribe FILE.wav FILE.m4a -`` with the m4a piped in: stdin transcribes exactly like the file."""
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "transcribe", "--json", str(WAV), str(encoded["m4a"]), "-"],
        input=encoded["m4a"].read_bytes(),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [line["file"] for line in lines] == [str(WAV), str(encoded["m4a"]), "-"]
    wav, m4a, stdin = (line["text"] for line in lines)
    assert stdin == m4a and stdin, lines
    assert set(m4a.split()) & set(wav.split()), lines  # a lossy copy of the same speech
