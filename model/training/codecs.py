"""Lossy speech-codec round trips for augmentation: what phones, VoIP and radio do to a voice.

G.711 mu-law and A-law are a few lines of numpy (8 kHz, companded to 8 bits). GSM 06.10 goes through
sox, G.722 and Opus through ffmpeg: one short-lived process per example, tens of milliseconds for a few
seconds of audio, so on-the-fly use at a modest probability adds little to a training step; when a tool
is missing the example falls back to G.711.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from model.training.signal import SR, change_speed

CODECS = ("mulaw", "alaw", "gsm", "g722", "opus")


def _to_8k(x: np.ndarray) -> np.ndarray:
    return change_speed(x, 2.0)


def _from_8k(x: np.ndarray, n: int) -> np.ndarray:
    y = change_speed(x, 0.5)
    return np.pad(y, (0, max(0, n - len(y))))[:n]


def mulaw(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """G.711 mu-law at 8 kHz: compand, quantize to 8 bits, expand, back to 16 kHz."""
    y = np.clip(_to_8k(x), -1, 1)
    c = np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)
    c = np.round(c * 127) / 127
    return _from_8k((np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu).astype(np.float32), len(x))


def alaw(x: np.ndarray, a: float = 87.6) -> np.ndarray:
    """G.711 A-law at 8 kHz."""
    y = np.clip(_to_8k(x), -1, 1)
    ay = np.abs(y)
    small = ay < 1 / a
    c = np.where(small, a * ay / (1 + np.log(a)), (1 + np.log(np.maximum(a * ay, 1e-12))) / (1 + np.log(a)))
    c = np.round(np.sign(y) * c * 127) / 127
    ac = np.abs(c)
    e = np.where(ac < 1 / (1 + np.log(a)), ac * (1 + np.log(a)) / a, np.exp(ac * (1 + np.log(a)) - 1) / a)
    return _from_8k((np.sign(c) * e).astype(np.float32), len(x))


def _run(cmd: list[str], data: bytes) -> bytes:
    try:
        return subprocess.run(cmd, input=data, capture_output=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return b""


def _pcm(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def _samples(data: bytes, n: int) -> np.ndarray | None:
    """16-bit PCM bytes as float32, cut or padded to ``n`` samples; None when empty."""
    y = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768
    return np.pad(y, (0, max(0, n - len(y))))[:n] if len(y) else None


def gsm(x: np.ndarray) -> np.ndarray | None:
    """GSM 06.10 full rate (13 kb/s, 8 kHz) through sox: one process encodes, one decodes."""
    if not shutil.which("sox"):
        return None
    raw = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(SR)]
    enc = _run(["sox", "-q", *raw, "-", "-t", "gsm", "-r", "8000", "-"], _pcm(x))
    return (
        _samples(_run(["sox", "-q", "-t", "gsm", "-r", "8000", "-", *raw, "-"], enc), len(x)) if enc else None
    )


def _ffmpeg(x: np.ndarray, encode: list[str], fmt: str, delay: int = 0) -> np.ndarray | None:
    """Encode with ffmpeg into ``fmt`` and decode again (two processes: a filter graph can't round-trip
    a codec); ``delay``: the codec's delay in samples, removed so the transcript stays aligned."""
    if not shutil.which("ffmpeg"):
        return None
    base = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    raw_in = ["-f", "s16le", "-ar", str(SR), "-ac", "1", "-i", "pipe:0"]
    enc = _run([*base, *raw_in, *encode, "-f", fmt, "pipe:1"], _pcm(x))
    if not enc:
        return None
    dec = [*base, "-f", fmt, "-i", "pipe:0", "-f", "s16le", "-ar", str(SR), "-ac", "1", "pipe:1"]
    out = _run(dec, enc)
    return _samples(out[2 * delay :], len(x))


def g722(x: np.ndarray) -> np.ndarray | None:
    """G.722 (64 kb/s sub-band ADPCM, 16 kHz wideband telephony) through ffmpeg."""
    return _ffmpeg(x, ["-c:a", "g722", "-ar", "16000"], "g722", delay=22)


def opus(x: np.ndarray, kbps: int) -> np.ndarray | None:
    """Opus at a low bit rate (VoIP) through ffmpeg's libopus."""
    return _ffmpeg(x, ["-c:a", "libopus", "-b:a", f"{kbps}k", "-application", "voip"], "ogg")


def codec_round_trip(x: np.ndarray, rng: np.random.Generator, codec: str | None = None) -> np.ndarray:
    """``x`` (16 kHz float32) after a round trip through ``codec`` (default: one drawn from CODECS);
    G.711 mu-law when the tool a codec needs is missing or fails."""
    codec = codec or str(rng.choice(CODECS))
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; known: {CODECS}")
    y: np.ndarray | None
    if codec == "alaw":
        y = alaw(x)
    elif codec == "gsm":
        y = gsm(x)
    elif codec == "g722":
        y = g722(x)
    elif codec == "opus":
        y = opus(x, int(rng.choice([6, 8, 10, 12, 16])))
    else:
        y = None
    return (mulaw(x) if y is None else y).astype(np.float32)
