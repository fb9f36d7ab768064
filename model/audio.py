"""Audio file reading and sample-rate conversion.

Every model in this project consumes 16 kHz mono float32, so all audio entering the system goes through
``load_audio`` (files) or ``StreamResampler`` (live chunks). Resampling uses soxr's high-quality
filter: cheaper converters alias enough to cost measurable accuracy on sibilants.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile
import soxr

DEFAULT_SAMPLE_RATE = 16_000
RESAMPLE_QUALITY = "HQ"


class AudioLoadError(ValueError):
    """An audio file exists but cannot be used: unreadable format, corrupt data or no samples."""


def load_audio(path: str | os.PathLike[str], sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` (wav, flac, ogg, ... anything libsndfile reads) as mono float32 at ``sample_rate``.

    Channels are averaged rather than taking the first one, so a recording with the speaker on one side
    of a stereo pair is not lost.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    try:
        samples, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioLoadError(f"cannot read audio from {path}: {error}") from error
    if samples.shape[0] == 0:
        raise AudioLoadError(f"audio file {path} contains no samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return resample(mono, file_rate, sample_rate)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Convert a whole signal (1-D, or 2-D frames x channels) from ``orig_sr`` to ``target_sr`` as float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr or audio.shape[0] == 0:
        return np.ascontiguousarray(audio)
    return soxr.resample(audio, orig_sr, target_sr, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)


class StreamResampler:
    """Resamples a mono signal that arrives in chunks, keeping filter state between chunks.

    Resampling each chunk on its own would restart the filter at every boundary and click; this keeps
    one ``soxr.ResampleStream`` per stream instead. Output lags input by the filter delay, which
    ``flush`` releases at the end of the stream. When the rates match, chunks pass through untouched.
    """

    def __init__(self, orig_sr: int, target_sr: int = DEFAULT_SAMPLE_RATE) -> None:
        if orig_sr <= 0 or target_sr <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
        self.orig_sr = orig_sr
        self.target_sr = target_sr
        self._stream = (
            None
            if orig_sr == target_sr
            else soxr.ResampleStream(orig_sr, target_sr, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        )

    def process(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next chunk; ``last=True`` also drains the filter (then call ``reset`` to reuse)."""
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        if chunk.ndim != 1:
            raise ValueError(f"expected a 1-D mono chunk, got shape {chunk.shape}")
        if self._stream is None:
            return chunk
        return self._stream.resample_chunk(chunk, last=last)

    def flush(self) -> np.ndarray:
        """Return the samples still held in the filter at the end of the stream."""
        return self.process(np.zeros(0, dtype=np.float32), last=True)

    def reset(self) -> None:
        """Forget all state so a new, unrelated signal can start."""
        if self._stream is not None:
            self._stream.clear()
