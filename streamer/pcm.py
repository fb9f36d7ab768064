"""Stage 1 of the streaming data path: client PCM -> validated 16 kHz mono float32.

A :class:`PcmDecoder` belongs to one stream. It accepts raw little-endian bytes (``pcm_s16le`` or
``f32le``/``pcm_f32le``) or numpy arrays (int16 or floating point, 1-D), rejects malformed input with an
:class:`AudioFormatError` whose message says what is wrong, and resamples to the model rate with a
stateful soxr stream (``model.audio.StreamResampler``), so chunk boundaries never click.
"""

from __future__ import annotations

import numpy as np

MODEL_SAMPLE_RATE = 16_000
# What every entry point accepts (the engine API, the native protocol, the vosk port: docs/protocol.md).
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "f32le": np.dtype("<f4"), "pcm_f32le": np.dtype("<f4")}
WIRE_ENCODINGS = ("pcm_s16le", "f32le")  # the names the websocket protocol takes
# A float sample above this magnitude is not audio (float PCM is nominally within [-1, 1]); it is
# almost always int16 data sent with encoding="f32le".
MAX_FLOAT_MAGNITUDE = 64.0


class AudioFormatError(ValueError):
    """The client's audio cannot be used as declared (bad encoding, length, rate or sample values)."""


def check_sample_rate(sample_rate: object) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise AudioFormatError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise AudioFormatError(
            f"sample_rate {sample_rate} Hz is outside the supported range {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )
    return int(sample_rate)


def check_encoding(encoding: str) -> np.dtype:
    try:
        return ENCODINGS[encoding]
    except (KeyError, TypeError):
        raise AudioFormatError(
            f"unknown encoding {encoding!r}; expected one of {', '.join(sorted(ENCODINGS))}"
        ) from None


def decode(data: bytes | bytearray | memoryview | np.ndarray, encoding: str = "pcm_s16le") -> np.ndarray:
    """Turn one chunk into float32 samples in [-1, 1] at its own sample rate (no resampling).

    Bytes are interpreted per ``encoding``; arrays by their dtype (int16 scaled by 1/32768, floats as is).
    """
    if isinstance(data, np.ndarray):
        return _decode_array(data)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AudioFormatError(f"audio must be bytes or a numpy array, got {type(data).__name__}")
    samples = check_frame(data, encoding)
    if samples.dtype.kind == "i":
        return samples.astype(np.float32) * np.float32(1.0 / 32768.0)
    return _check_float(samples.astype(np.float32))


def check_frame(data: bytes | bytearray | memoryview, encoding: str) -> np.ndarray:
    """The samples of one chunk of bytes as stored (a copy-free view), once it holds whole, finite ones."""
    dtype = check_encoding(encoding)
    raw = memoryview(data).cast("B")
    if len(raw) % dtype.itemsize:
        raise AudioFormatError(
            f"{encoding} audio needs a multiple of {dtype.itemsize} bytes per chunk, got {len(raw)} "
            "(odd length: truncated frame or wrong encoding?)"
        )
    samples = np.frombuffer(raw, dtype=dtype)
    if dtype.kind == "f":
        _check_finite(samples)
    return samples


def _decode_array(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise AudioFormatError(f"audio arrays must be 1-D mono, got shape {array.shape}")
    if array.dtype == np.int16:
        return array.astype(np.float32) * np.float32(1.0 / 32768.0)
    if array.dtype.kind == "f":
        return _check_float(np.asarray(array, dtype=np.float32))
    raise AudioFormatError(f"audio arrays must be int16 or floating point, got dtype {array.dtype}")


def _check_finite(samples: np.ndarray) -> None:
    if samples.size and not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioFormatError(f"audio contains {bad} NaN/Inf sample(s)")


def _check_float(samples: np.ndarray) -> np.ndarray:
    _check_finite(samples)
    if samples.size and float(np.abs(samples).max()) > MAX_FLOAT_MAGNITUDE:
        raise AudioFormatError(
            f"float audio must lie in [-1, 1], got peak {float(np.abs(samples).max()):.3g} "
            "(int16 data sent as f32le?)"
        )
    return samples


class PcmDecoder:
    """Per-stream decoder + resampler: ``push(chunk) -> 16 kHz float32``, ``flush()`` at the end."""

    def __init__(self, sample_rate: int = MODEL_SAMPLE_RATE, encoding: str = "pcm_s16le") -> None:
        self.sample_rate = check_sample_rate(sample_rate)
        check_encoding(encoding)
        self.encoding = encoding
        self._resampler = None
        if self.sample_rate != MODEL_SAMPLE_RATE:
            from model.audio import StreamResampler

            self._resampler = StreamResampler(self.sample_rate, MODEL_SAMPLE_RATE)

    def push(self, data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
        samples = decode(data, self.encoding)
        if self._resampler is None or samples.size == 0:
            return samples
        return self._resampler.process(samples)

    def flush(self) -> np.ndarray:
        """Samples still inside the resampling filter (call once at the end of the audio)."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        tail = self._resampler.flush()
        self._resampler.reset()
        return tail
