"""Audio file reading and sample-rate conversion.

Every model in this project consumes 16 kHz mono float32, so all audio entering the system goes through
``load_audio`` (files) or ``StreamResampler`` (live chunks). Resampling uses soxr's high-quality
filter: cheaper converters alias enough to cost measurable accuracy on sibilants.

Files libsndfile cannot read (m4a/AAC, MP4, WebM, MP3 before libsndfile 1.1) are decoded by ffmpeg when it
is installed: it converts them to a float WAV at the file's own rate, so the resampling stays soxr's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import soxr

DEFAULT_SAMPLE_RATE = 16_000
RESAMPLE_QUALITY = "HQ"


class AudioLoadError(ValueError):
    """An audio file exists but cannot be used: unreadable format, corrupt data or no samples."""


FFMPEG_PACKAGE = "ffmpeg"  # the Debian package (and executable) that decodes what libsndfile cannot
FFMPEG_TIMEOUT_S = 600


def load_audio(path: str | os.PathLike[str], sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` (wav, flac, ogg, ... anything libsndfile reads; else through ffmpeg) as mono float32 at
    ``sample_rate``.

    Channels are averaged rather than taking the first one, so a recording with the speaker on one side
    of a stereo pair is not lost.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    try:
        samples, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        samples, file_rate = _ffmpeg_read(path, error)
    if samples.shape[0] == 0:
        raise AudioLoadError(f"audio file {path} contains no samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return resample(mono, file_rate, sample_rate)


def load_audio_bytes(data: bytes, sample_rate: int = DEFAULT_SAMPLE_RATE, name: str = "stdin") -> np.ndarray:
    """`load_audio` of a whole file's bytes (standard input, say); ``name`` is what errors call it."""
    if not data:
        raise AudioLoadError(f"{name}: no audio data")
    # A temporary file, not a pipe: MP4/m4a keep their index at the end, which a pipe cannot seek to.
    with tempfile.TemporaryDirectory(prefix="audio-") as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(data)
        try:
            return load_audio(path, sample_rate)
        except AudioLoadError as error:
            raise AudioLoadError(str(error).replace(str(path), name)) from None


def _ffmpeg_read(path: Path, soundfile_error: Exception) -> tuple[np.ndarray, int]:
    """(frames x channels float32, rate) of a file libsndfile refused, decoded by ffmpeg."""
    ffmpeg = shutil.which(FFMPEG_PACKAGE)
    if ffmpeg is None:
        raise AudioLoadError(
            f"cannot read audio from {path}: {soundfile_error}. Formats such as m4a/AAC, MP4 and WebM are "
            f"decoded by ffmpeg: install the {FFMPEG_PACKAGE!r} package (apt-get install {FFMPEG_PACKAGE})"
        )
    with tempfile.TemporaryDirectory(prefix="audio-") as tmp:
        wav = Path(tmp) / "decoded.wav"
        command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-c:a", "pcm_f32le", str(wav)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AudioLoadError(
                f"cannot read audio from {path}: ffmpeg took over {FFMPEG_TIMEOUT_S} s"
            ) from None
        if result.returncode != 0 or not wav.is_file():
            why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
            raise AudioLoadError(
                f"cannot read audio from {path}: not audio libsndfile or ffmpeg reads ({why})"
            )
        samples, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    return samples, rate


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
