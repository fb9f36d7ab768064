"""Non-speech audio for training examples whose transcript is empty.

A CTC model that has only ever heard speech turns silence and noise into letters: every training input
had words in it, and the per-utterance normalization makes a −70 dBFS floor as loud as a voice. Examples of
non-speech with an empty target (all blanks) teach it that such input says nothing; pieces of it spliced
before, between and after utterances teach it where words stop.

Kinds (each drawn with its own random parameters, 16 kHz float32):
  silence — digital zero or a faint white/pink floor (−100…−45 dBFS)
  noise   — white / pink / brown noise, steady or slowly swelling
  hum     — 50 or 60 Hz mains hum with harmonics, plus a faint floor
  tone    — one or a few steady sine tones (beeps, whistles, dial tones), on or pulsed
  clicks  — impulse trains or random clicks (keyboard, ticking), over a faint floor
  music   — note sequences of harmonic tones with envelopes (music-like, no words)
  fan     — low-passed noise with a rotating-blade rumble
"""

from __future__ import annotations

import numpy as np

from model.training.augment import SR, colored_noise

KINDS = ("silence", "noise", "hum", "tone", "clicks", "music", "fan")


def _db(x: float) -> float:
    return float(10 ** (x / 20))


def _floor(n: int, rng: np.random.Generator) -> np.ndarray:
    return colored_noise(n, rng, str(rng.choice(["white", "pink"]))) * _db(rng.uniform(-90, -55))


def _silence(n: int, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.25:
        return np.zeros(n, dtype=np.float32)
    color = str(rng.choice(["white", "pink"]))
    return colored_noise(n, rng, color) * _db(rng.uniform(-100, -45))


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    x = colored_noise(n, rng, str(rng.choice(["white", "pink", "brown"])))
    if rng.random() < 0.3:  # slow swell
        t = np.arange(n) / SR
        x *= (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 6.3))).astype(
            np.float32
        )
    return x * _db(rng.uniform(-50, -10))


def _hum(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    f0 = 50.0 if rng.random() < 0.5 else 60.0
    x = np.zeros(n, dtype=np.float32)
    for h in range(1, int(rng.integers(2, 9))):
        x += (rng.uniform(0.1, 1.0) / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3))).astype(
            np.float32
        )
    return x / (np.abs(x).max() + 1e-9) * _db(rng.uniform(-45, -10)) + _floor(n, rng)


def _tone(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    x = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        x += np.sin(2 * np.pi * rng.uniform(200, 4000) * t).astype(np.float32)
    if rng.random() < 0.5:  # pulsed beeps
        period = rng.uniform(0.2, 1.5)
        x *= ((t % period) < period * rng.uniform(0.2, 0.7)).astype(np.float32)
    return x / (np.abs(x).max() + 1e-9) * _db(rng.uniform(-40, -6)) + _floor(n, rng)


def _clicks(n: int, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(n, dtype=np.float32)
    if rng.random() < 0.5:
        positions = np.arange(int(rng.uniform(0, 0.3) * SR), n, int(rng.uniform(0.05, 1.0) * SR))
    else:
        positions = rng.integers(0, n, int(rng.integers(2, 40)))
    width = int(rng.integers(1, 80))
    shape = (np.exp(-np.arange(width) / max(1.0, width / 4)) * rng.choice([-1, 1])).astype(np.float32)
    for p in positions:
        seg = x[p : p + width]
        seg += shape[: len(seg)] * rng.uniform(0.3, 1.0)
    return x * _db(rng.uniform(-35, -3)) + _floor(n, rng)


def _music(n: int, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(n, dtype=np.float32)
    tempo = rng.uniform(0.12, 0.6)  # seconds per note
    start = 0
    while start < n:
        length = min(n - start, int(tempo * SR * rng.choice([1, 1, 2, 4])))
        t = np.arange(length) / SR
        note = np.zeros(length, dtype=np.float32)
        for _ in range(int(rng.integers(1, 4))):  # a chord of harmonic tones
            f0 = 110.0 * 2 ** (int(rng.integers(0, 36)) / 12)
            for h in range(1, int(rng.integers(2, 7))):
                note += (np.sin(2 * np.pi * f0 * h * t) / h**1.2).astype(np.float32)
        envelope = np.exp(-t / rng.uniform(0.05, 0.8)).astype(np.float32)
        x[start : start + length] += note * envelope
        start += length
    return x / (np.abs(x).max() + 1e-9) * _db(rng.uniform(-40, -6)) + _floor(n, rng)


def _fan(n: int, rng: np.random.Generator) -> np.ndarray:
    x = colored_noise(n, rng, "brown") + 0.3 * colored_noise(n, rng, "pink")
    t = np.arange(n) / SR
    blade = rng.uniform(15, 60)
    x *= (1 + rng.uniform(0.05, 0.4) * np.sin(2 * np.pi * blade * t)).astype(np.float32)
    return x / (x.std() + 1e-9) * _db(rng.uniform(-45, -15))


_MAKERS = {
    "silence": _silence,
    "noise": _noise,
    "hum": _hum,
    "tone": _tone,
    "clicks": _clicks,
    "music": _music,
    "fan": _fan,
}


def nonspeech(seconds: float, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """``seconds`` of non-speech (float32, 16 kHz, within ±1) of ``kind`` (default: drawn from KINDS)."""
    kind = kind or str(rng.choice(KINDS))
    if kind not in _MAKERS:
        raise ValueError(f"unknown non-speech kind {kind!r}; known: {KINDS}")
    n = max(1, int(seconds * SR))
    return np.clip(_MAKERS[kind](n, rng), -1.0, 1.0).astype(np.float32)
