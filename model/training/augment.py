"""On-the-fly augmentation of synthetic speech toward real microphones (numpy + soxr, no sox processes).

Applied per training example, each with its own probability (see :class:`AugmentConfig`):
  speed     — resampling by 0.9–1.1 (Kaldi-style speed perturbation: tempo and pitch together)
  pitch     — pitch shift without tempo change (resample + overlap-add time stretch back)
  reverb    — convolution with a synthetic room impulse response (exponentially decaying noise with
              sparse early reflections; RT60 0.15–0.8 s; wet/dry mix)
  eq        — band limiting: telephone (300–3400 Hz), random low-/high-pass, random tilt
  noise     — white / pink / brown noise or babble-like modulated noise at a random SNR (0–35 dB)
  gain      — random level −25…+6 dB, occasionally clipped
Off by default, and then drawing no random numbers (so the default chain is what it was); the real-speech
recipe turns them on, since one real voice has to stand for many:
  tempo     — time stretch without pitch change
  formant   — vocal-tract-length warp of the spectrum (formants and harmonics move by 0.85–1.18)
  room      — convolution with a measured room impulse response (``rooms.py``) instead of a synthetic one
  codec     — a lossy speech codec round trip: mu-law / A-law at 8 kHz (here), GSM 06.10 (sox), G.722,
              Opus 6–16 kb/s (ffmpeg); after the noise, as a phone line would be
A low noise floor is always added (synthesis output is too clean). Everything is seeded by the caller's
``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.training.signal import SR, change_speed


@dataclass
class AugmentConfig:
    p_speed: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)
    p_pitch: float = 0.3
    pitch_semitones: float = 3.0
    p_reverb: float = 0.35
    p_eq: float = 0.35
    p_telephone: float = 0.1
    p_noise: float = 0.6
    snr_db: tuple[float, float] = (0.0, 35.0)
    p_gain: float = 1.0
    p_clip: float = 0.05
    noise_floor_db: tuple[float, float] = (-75.0, -50.0)
    p_tempo: float = 0.0
    tempo_range: tuple[float, float] = (0.85, 1.15)
    p_formant: float = 0.0
    formant_range: tuple[float, float] = (0.85, 1.18)
    p_room: float = 0.0  # share of the reverberated examples that use a measured room
    p_codec: float = 0.0


def _time_stretch(x: np.ndarray, rate: float, frame: int = 512, hop: int = 128) -> np.ndarray:
    """Crude overlap-add time stretch (length / rate) used to undo the tempo change of a pitch shift."""
    if abs(rate - 1.0) < 1e-3 or len(x) < 2 * frame:
        return x
    win = np.hanning(frame).astype(np.float32)
    out_len = int(len(x) / rate)
    out = np.zeros(out_len + frame, dtype=np.float32)
    norm = np.zeros_like(out)
    for o in range(0, out_len, hop):
        i = int(o * rate)
        if i + frame > len(x):
            break
        out[o : o + frame] += x[i : i + frame] * win
        norm[o : o + frame] += win
    norm[norm < 1e-3] = 1.0
    return (out / norm)[:out_len]


def colored_noise(n: int, rng: np.random.Generator, color: str) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    if color == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    if color == "pink":
        spec /= np.sqrt(f)
    elif color == "brown":
        spec /= f
    elif color == "babble":  # speech-shaped, amplitude-modulated
        spec *= np.exp(-((np.log(f) - np.log(500)) ** 2) / 1.5)
    out = np.fft.irfft(spec, n).astype(np.float32)
    if color == "babble":
        t = np.arange(n) / SR
        out *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6.28)).astype(np.float32)
    return out / (out.std() + 1e-9)


def synthetic_rir(rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.15, 0.8)
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    rir = rng.standard_normal(n).astype(np.float32) * np.exp(-6.9 * t / rt60).astype(np.float32)
    # lowpass the tail a little (air/wall absorption)
    k = int(rng.integers(1, 6))
    rir = np.convolve(rir, np.ones(k, dtype=np.float32) / k, mode="same")
    for _ in range(int(rng.integers(2, 8))):  # early reflections
        d = int(rng.uniform(0.002, 0.05) * SR)
        if d < n:
            rir[d] += rng.uniform(0.2, 0.8) * rng.choice([-1, 1])
    rir[0] = 1.0
    return rir / np.sqrt((rir**2).sum())


def _fft_filter(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    n = len(x)
    return np.fft.irfft(np.fft.rfft(x) * gain, n).astype(np.float32)


def apply_eq(x: np.ndarray, rng: np.random.Generator, telephone: bool) -> np.ndarray:
    f = np.fft.rfftfreq(len(x), 1 / SR)
    if telephone:
        lo, hi = rng.uniform(200, 400), rng.uniform(3000, 3600)
    else:
        lo, hi = rng.uniform(20, 250), rng.uniform(3500, 8000)
    order = rng.uniform(2, 6)
    gain = 1 / np.sqrt(1 + (lo / np.maximum(f, 1)) ** (2 * order)) / np.sqrt(1 + (f / hi) ** (2 * order))
    tilt = rng.uniform(-4, 4)  # dB per octave around 1 kHz
    gain *= (np.maximum(f, 50) / 1000) ** (tilt / 6.02)
    return _fft_filter(x, gain.astype(np.float32))


def augment(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """Return an augmented copy of the 16 kHz float32 waveform ``x``."""
    cfg = cfg or AugmentConfig()
    x = x.astype(np.float32, copy=True)
    if rng.random() < cfg.p_speed:
        x = change_speed(x, rng.uniform(*cfg.speed_range))
    if cfg.p_tempo and rng.random() < cfg.p_tempo:
        x = _time_stretch(x, rng.uniform(*cfg.tempo_range))
    if rng.random() < cfg.p_pitch:
        factor = 2 ** (rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones) / 12)
        x = _time_stretch(change_speed(x, factor), 1 / factor)
    if cfg.p_formant and rng.random() < cfg.p_formant:
        x = formant_warp(x, rng.uniform(*cfg.formant_range))
    peak = np.abs(x).max() + 1e-9
    if rng.random() < cfg.p_reverb:
        rir = None
        if cfg.p_room and rng.random() < cfg.p_room:
            from model.training.rooms import measured_rir

            rir = measured_rir(rng)
        rir = synthetic_rir(rng) if rir is None else rir
        wet = np.convolve(x, rir)[: len(x)] if len(rir) < 64 else _fft_conv(x, rir)
        mix = rng.uniform(0.3, 1.0)
        x = mix * wet + (1 - mix) * x
    if rng.random() < cfg.p_eq:
        x = apply_eq(x, rng, telephone=rng.random() < cfg.p_telephone / max(cfg.p_eq, 1e-9))
    x = x / (np.abs(x).max() + 1e-9) * peak
    if rng.random() < cfg.p_noise:
        color = rng.choice(["white", "pink", "brown", "babble"])
        snr = rng.uniform(*cfg.snr_db)
        sig = np.sqrt(np.mean(x**2)) + 1e-9
        x = x + colored_noise(len(x), rng, color) * sig * 10 ** (-snr / 20)
    if cfg.p_codec and rng.random() < cfg.p_codec:
        from model.training.codecs import codec_round_trip

        x = codec_round_trip(x, rng)
    if rng.random() < cfg.p_gain:
        target = 10 ** (rng.uniform(-25, -1) / 20)
        x = x / (np.abs(x).max() + 1e-9) * target
        if rng.random() < cfg.p_clip:
            x = np.clip(x * 10 ** (rng.uniform(3, 12) / 20), -target, target)
    x = x + rng.standard_normal(len(x)).astype(np.float32) * 10 ** (rng.uniform(*cfg.noise_floor_db) / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def formant_warp(x: np.ndarray, alpha: float, frame: int = 512, hop: int = 128) -> np.ndarray:
    """Vocal-tract-length perturbation on the waveform: each STFT frame is filtered by the ratio of its
    spectral envelope read at f / alpha to the envelope itself, so the formants move by ``alpha`` while
    the harmonics (the pitch) and the duration stay. The envelope is the magnitude smoothed over ~470 Hz
    (wider than the harmonic spacing); with the pitch shift above, pitch and vocal-tract size vary
    separately."""
    if abs(alpha - 1.0) < 1e-3 or len(x) < frame:
        return x
    win = np.hanning(frame).astype(np.float32)
    n_frames = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n_frames)[:, None]  # (frames, frame)
    spec = np.fft.rfft(x[idx] * win, axis=1)  # (frames, frame // 2 + 1)
    kernel = np.ones(15, dtype=np.float32) / 15
    mag = np.abs(spec).astype(np.float32)
    env = np.apply_along_axis(lambda m: np.convolve(m, kernel, mode="same"), 1, mag) + 1e-6
    bins = np.arange(spec.shape[1], dtype=np.float32)
    warped = np.stack([np.interp(bins / alpha, bins, e) for e in env])
    spec = spec * np.clip(warped / env, 0.1, 10.0)
    frames = np.fft.irfft(spec, frame, axis=1).astype(np.float32) * win
    out = np.zeros(len(x), dtype=np.float32)
    norm = np.zeros(len(x), dtype=np.float32)
    np.add.at(out, idx.ravel(), frames.ravel())
    np.add.at(norm, idx.ravel(), np.tile(win**2, n_frames))
    covered = norm > 1e-3
    out[covered] /= norm[covered]
    out[~covered] = x[~covered]
    return out


def _fft_conv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]
    return y.astype(np.float32)
