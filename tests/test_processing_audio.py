"""Audio loading and resampling."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from model.audio import AudioLoadError, StreamResampler, load_audio, resample


def _sine(frequency: float, sample_rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _dominant_frequency(signal: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / sample_rate)[spectrum.argmax()])


@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000])
def test_resampled_sine_keeps_its_frequency(orig_sr):
    resampled = resample(_sine(440.0, orig_sr), orig_sr, 16000)
    assert resampled.dtype == np.float32
    assert abs(len(resampled) - 16000) <= 1
    assert abs(_dominant_frequency(resampled, 16000) - 440.0) <= 1.0


def test_stream_resampler_matches_whole_signal():
    signal = _sine(300.0, 48000, 0.5)
    resampler = StreamResampler(48000, 16000)
    pieces = [resampler.process(chunk) for chunk in np.array_split(signal, 7)]
    streamed = np.concatenate([*pieces, resampler.flush()])
    whole = resample(signal, 48000, 16000)
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-3
    assert abs(_dominant_frequency(streamed, 16000) - 300.0) <= 2.0


def test_stream_resampler_passes_through_at_same_rate():
    chunk = _sine(100.0, 16000, 0.1)
    assert np.array_equal(StreamResampler(16000, 16000).process(chunk), chunk)


@pytest.mark.parametrize(
    ("extension", "subtype", "tolerance"), [("flac", "PCM_16", 1e-4), ("ogg", "VORBIS", 0.05)]
)
def test_compressed_roundtrip(tmp_path, extension, subtype, tolerance):
    signal = _sine(440.0, 16000)
    path = tmp_path / f"tone.{extension}"
    soundfile.write(path, signal, 16000, subtype=subtype)
    loaded = load_audio(path)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert len(loaded) == len(signal)
    assert np.sqrt(np.mean((loaded - signal) ** 2)) < tolerance
    assert abs(_dominant_frequency(loaded, 16000) - 440.0) <= 1.0


def test_stereo_is_mixed_down_and_resampled(tmp_path):
    left, right = _sine(440.0, 44100), np.zeros(44100, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    loaded = load_audio(path, sample_rate=16000)
    assert abs(len(loaded) - 16000) <= 1
    assert abs(np.max(np.abs(loaded[1000:-1000])) - 0.25) < 0.01


def test_errors_for_missing_unreadable_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "nope.wav")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioLoadError, match="cannot read"):
        load_audio(garbage)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioLoadError, match="no samples"):
        load_audio(empty)
