"""Stage 3: cut a stream's samples into model windows aligned to the model's frame grid.

Geometry. The Wav2Vec2 feature encoder is a stack of unpadded 1-D convolutions, so output frame ``f`` of
an input that starts at sample ``s`` (a multiple of the total stride) is computed from samples
``[s + f*stride, s + f*stride + receptive_field)``; for the released configs ``stride = 320`` (20 ms)
and ``receptive_field = 400``. Both are derived from ``conv_kernel``/``conv_stride``
(:meth:`FrameGeometry.from_config`). Windows therefore always start on a multiple of the stride (relative
to the segment origin) and frame ``j`` of a window is frame ``start/stride + j`` of the whole segment.

Layout. Chunk ``k`` of a segment covers samples ``[k*C, (k+1)*C)`` and *owns* frames
``[k*C/stride, (k+1)*C/stride)``. Its window is ``[max(0, k*C - L), (k+1)*C + A)``: left context ``L``,
the chunk, and look-ahead ``A`` (at least ``receptive_field - stride`` samples, so the last owned frame
sees all its samples). The first windows have less (no) left context; when the segment ends, the
remaining chunks are flushed with whatever look-ahead exists, and the owned frames stop at the offline
frame count ``num_frames(segment length)``, so the owned frames of all windows are exactly the frames of
the whole segment, each once. The layout depends only on sample positions, never on how the audio was
chunked on arrival: the same audio always gives the same windows.

Catch-up. ``next_window(max_chunks=k)`` lets one window own up to ``k`` consecutive chunks,
``[chunk_start - L, chunk_start + k*C + A)``, when each of them would have made a plain window (all its
audio and look-ahead here, not gated, not the segment's last): it owns exactly their frames and costs
one forward of ``L + k*C + A`` samples instead of ``k`` of ``L + C + A`` (5x the new audio for the
default layout, 2x at k=4). Only the live engine asks for it, and only while its worker is late
(``stream.WindowQueue``); with ``k=1`` (the synchronous path, always) the layout is the one above.

Normalization (the model was trained on per-utterance zero-mean unit-variance input):
``"window"`` normalizes each window by its own statistics; ``"running"`` uses the mean/variance of all
segment samples up to the window end. Both are deterministic functions of the audio. Measured figures
are in ``docs/RESULTS.md``.

Energy gate. A window whose chunk + look-ahead is quieter than ``energy_gate_dbfs`` (loudest 20 ms RMS)
is not sent to the model: its owned frames are blank. Silence costs no model compute, and per-window
normalization never blows low-level noise up to unit variance.

Speech gate. With a ``speech_gate`` (``streamer.vad``, Silero VAD) it replaces the energy gate: a window
runs when a speech frame lies within the gate's pad of its chunk, else its owned frames are blank. The
decision depends on the audio up to ``chunk end + pad`` only, so it is the same however the audio
arrived; an open segment's window waits for that much audio (besides its look-ahead), and a window the
gate already knows to be silent is made without waiting for its look-ahead: silence after speech reaches
the endpointer sooner.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.feature_encoder import conv_output_lengths
from model.feature_extraction import NORMALIZATION_EPSILON
from streamer.ring_buffer import RingBuffer
from streamer.vad import SpeechGate

GATE_FRAME = 320  # 20 ms at 16 kHz: unit of the energy gate's loudness measure


@dataclass(frozen=True)
class FrameGeometry:
    stride: int = 320
    receptive_field: int = 400
    kernels: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    strides: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)

    @classmethod
    def from_config(cls, config: Any) -> FrameGeometry:
        kernels = tuple(int(k) for k in config.conv_kernel)
        strides = tuple(int(s) for s in config.conv_stride)
        if len(kernels) != len(strides) or not kernels:
            raise ValueError(f"conv_kernel {kernels} and conv_stride {strides} do not match")
        rf, jump = 1, 1
        for k, s in zip(kernels, strides, strict=True):
            rf += (k - 1) * jump
            jump *= s
        return cls(stride=jump, receptive_field=rf, kernels=kernels, strides=strides)

    def num_frames(self, n_samples: int) -> int:
        """Frames the feature encoder produces for ``n_samples`` input samples (0 if too short)."""
        return max(0, int(conv_output_lengths(int(n_samples), self.kernels, self.strides)))


@dataclass(frozen=True)
class WindowLayout:
    """Left context, chunk and look-ahead in samples (multiples of the stride)."""

    left: int
    chunk: int
    lookahead: int

    @classmethod
    def from_seconds(
        cls, geometry: FrameGeometry, left_s: float, chunk_s: float, lookahead_s: float, rate: int = 16_000
    ) -> WindowLayout:
        def frames(seconds: float) -> int:
            return max(0, round(seconds * rate / geometry.stride))

        chunk = max(1, frames(chunk_s)) * geometry.stride
        min_lookahead = math.ceil((geometry.receptive_field - geometry.stride) / geometry.stride)
        lookahead = max(min_lookahead, frames(lookahead_s)) * geometry.stride
        return cls(left=frames(left_s) * geometry.stride, chunk=chunk, lookahead=lookahead)

    @property
    def window(self) -> int:
        return self.left + self.chunk + self.lookahead


class WindowKind(enum.Enum):
    """What the model has to do for a window."""

    EMPTY = "empty"  # owns no frames: nothing to run, the merger only learns the segment moved on
    GATED = "gated"  # skipped by the energy or speech gate: its owned frames are blank
    SAMPLES = "samples"  # full-window path: the whole model runs on ``samples``
    FEATURES = "features"  # cached-feature path: the encoder runs on cached frames [frames_from, frames_to)


@dataclass
class Window:
    """One unit of model work: what to run (``kind``) plus which of its output frames the stream keeps."""

    seq: int  # per-stream sequence number (windows are merged in this order)
    generation: int  # segment number; a new segment starts after reset/overload drop
    origin: int  # absolute sample index where the segment starts
    start: int  # absolute sample indices of the window
    end: int
    first_frame: int  # segment frame index of the first owned frame
    owned_offset: int  # index of the first owned frame within the window's output
    owned: int  # number of owned frames (may be 0)
    final: bool  # last window of its segment (after reset/end)
    eos: bool = False  # ... and the stream ends after it
    kind: WindowKind = WindowKind.EMPTY
    arrival: float = 0.0  # monotonic time the window's newest sample arrived
    samples: np.ndarray | None = field(default=None, repr=False)  # SAMPLES: normalized input (length,)
    # FEATURES: the encoder runs on segment frames [frames_from, frames_to); the feature encoder only
    # runs on ``block`` (normalized samples of the not-yet-computed frames from block_from; None when
    # every frame is cached already).
    frames_from: int = 0
    frames_to: int = 0
    block_from: int = 0
    block: np.ndarray | None = field(default=None, repr=False)

    @property
    def gated(self) -> bool:
        return self.kind is WindowKind.GATED


def loudness_dbfs(samples: np.ndarray) -> float:
    """Loudest 20 ms RMS level of ``samples`` in dBFS (-inf for digital silence)."""
    if samples.size == 0:
        return -math.inf
    n = (len(samples) + GATE_FRAME - 1) // GATE_FRAME
    padded = np.zeros(n * GATE_FRAME, dtype=np.float32)
    padded[: len(samples)] = samples
    power = np.square(padded, dtype=np.float32).reshape(n, GATE_FRAME).mean(axis=1)
    peak = float(power.max())
    return -math.inf if peak <= 0 else 10.0 * math.log10(peak)


class Chunker:
    """Makes the windows of one stream from its ring buffer (see the module docstring).

    Not thread-safe by itself: the owning stream calls it under its lock.
    """

    def __init__(
        self,
        geometry: FrameGeometry,
        layout: WindowLayout,
        buffer: RingBuffer,
        *,
        normalization: str = "window",
        energy_gate_dbfs: float | None = -60.0,
        cache_features: bool = False,
        speech_gate: SpeechGate | None = None,
    ) -> None:
        if normalization not in ("window", "running"):
            raise ValueError(f"normalization must be 'window' or 'running', got {normalization!r}")
        self.geometry = geometry
        self.layout = layout
        self.buffer = buffer
        self.normalization = normalization
        self.energy_gate_dbfs = energy_gate_dbfs
        self.speech_gate = speech_gate  # fed by the stream as audio arrives; replaces the energy gate
        # Feature-encoder outputs are reusable across windows only when they do not depend on the
        # window: running normalization (per-window statistics would change them) and a per-frame
        # (layer-norm) feature encoder. The engine checks the latter.
        self.cache_features = cache_features and normalization == "running"
        self.seq = 0
        self.generation = 0
        self._closes: list[tuple[int, bool]] = []  # pending segment ends: (absolute index, end of stream)
        self._start_segment(buffer.end)

    @property
    def segment_end(self) -> int | None:
        return self._closes[0][0] if self._closes else None

    def _start_segment(self, origin: int) -> None:
        self.origin = origin
        self.next_chunk = 0  # index of the next chunk to window
        self._sum = 0.0  # running statistics over [origin, _stats_pos)
        self._sum_sq = 0.0
        self._stats_pos = origin
        self.features_until = 0  # segment frames [0, features_until) have cached features (or were skipped)

    # -- segment control ---------------------------------------------------------------------------

    def close_segment(self, eos: bool = False) -> None:
        """End the segment at the audio received so far: flush it (without look-ahead), then a final window.

        Audio received afterwards starts a new segment (``eos=False``, a reset).
        """
        self._closes.append((self.buffer.end, eos))

    def restart_at(self, origin: int) -> None:
        """Abandon the unprocessed audio before ``origin`` and start a new segment there (overload drop)."""
        self.generation += 1
        self._closes = [(max(i, origin), eos) for i, eos in self._closes if eos]
        self.buffer.discard_before(origin)
        self._start_segment(max(origin, self.buffer.start))

    @property
    def queued_samples(self) -> int:
        """Samples received but not yet part of a window's owned chunk."""
        return self.buffer.end - (self.origin + self.next_chunk * self.layout.chunk)

    @property
    def next_plain_end(self) -> int:
        """Absolute end of the next window with a full look-ahead: once this sample is here, it can be made."""
        lay = self.layout
        return self.origin + (self.next_chunk + 1) * lay.chunk + lay.lookahead

    @property
    def idle(self) -> bool:
        """True when no window can be made now."""
        return not self._can_make()

    # -- windows -----------------------------------------------------------------------------------

    def _can_make(self) -> bool:
        lay = self.layout
        chunk_start = self.origin + self.next_chunk * lay.chunk
        if self.segment_end is None:
            gate = self.speech_gate
            if gate is None:
                return self.next_plain_end <= self.buffer.end
            if not gate.covers(chunk_start + lay.chunk):
                return False
            return self.next_plain_end <= self.buffer.end or self._silent(chunk_start)
        return True

    def _silent(self, chunk_start: int) -> bool:
        """The speech gate's verdict on the chunk at ``chunk_start``: no speech within its pad."""
        assert self.speech_gate is not None
        return not self.speech_gate.speech_in(chunk_start, chunk_start + self.layout.chunk)

    def _gated(self, chunk_start: int, ahead: np.ndarray | None) -> bool:
        """Does the chunk at ``chunk_start`` skip the model? The speech gate's verdict when there is one,
        else the energy gate's on ``ahead`` (the samples from the chunk start to the window end)."""
        if self.speech_gate is not None:
            return self._silent(chunk_start)
        if self.energy_gate_dbfs is not None:
            assert ahead is not None
            return loudness_dbfs(ahead) < self.energy_gate_dbfs
        return False

    def next_window(self, max_chunks: int = 1) -> Window | None:
        """The next window if its audio is all here (or the segment is closed), else None.

        ``max_chunks`` > 1 (catch-up): the window owns up to that many chunks in a row when each of them
        would have made a plain window (see :meth:`_mergeable`), so a stream that fell behind costs one
        forward of ``left + k*chunk + lookahead`` instead of k forwards of ``left + chunk + lookahead``.
        """
        if not self._can_make():
            return None
        lay, geo = self.layout, self.geometry
        chunks = self._chunks_to_merge(max_chunks)
        span = chunks * lay.chunk  # the owned part: ``chunks`` whole chunks
        rel_chunk = self.next_chunk * lay.chunk
        chunk_start = self.origin + rel_chunk
        final = False
        if self.segment_end is None:
            end = chunk_start + span + lay.lookahead
            if end > self.buffer.end:  # known silent (_can_make): no need to wait for the look-ahead
                end = chunk_start + span
            first = rel_chunk // geo.stride
            owned = span // geo.stride
        else:
            total = geo.num_frames(self.segment_end - self.origin)
            first = rel_chunk // geo.stride
            last = min((rel_chunk + lay.chunk) // geo.stride, total)
            owned = max(0, last - first)
            end = min(chunk_start + lay.chunk + lay.lookahead, self.segment_end)
            final = last >= total or chunk_start + lay.chunk >= self.segment_end
            if final:
                # Flush: one window takes everything that is left of the segment.
                end = self.segment_end
                owned = max(0, total - first)
            elif chunks > 1:  # merged chunks are never the segment's last and have their look-ahead
                owned = span // geo.stride
                end = chunk_start + span + lay.lookahead
        start = max(self.origin, chunk_start - lay.left)
        window = Window(
            seq=self.seq,
            generation=self.generation,
            origin=self.origin,
            start=start,
            end=end,
            first_frame=first,
            owned_offset=(chunk_start - start) // geo.stride,
            owned=owned,
            final=final,
        )
        if final:
            window.eos = self._closes[0][1]
        self.seq += 1
        self.next_chunk += chunks
        if owned > 0:
            raw = self.buffer.read(start, end)
            self._update_stats(end)
            if self._gated(chunk_start, raw[chunk_start - start :]):
                window.kind = WindowKind.GATED
            elif self.cache_features:
                self._plan_features(window, raw)
            else:
                window.kind = WindowKind.SAMPLES
                window.samples = self._normalize(raw)
        if final:
            # The segment is done; audio after its end belongs to the next one.
            segment_end, _ = self._closes.pop(0)
            self.buffer.discard_before(segment_end)
            self.generation += 1
            self._start_segment(segment_end)
        else:
            # Keep only what the next window's left context needs.
            self.buffer.discard_before(self.origin + self.next_chunk * lay.chunk - lay.left)
        if self.speech_gate is not None:
            self.speech_gate.forget_before(self.origin + self.next_chunk * lay.chunk)
        return window

    def _chunks_to_merge(self, max_chunks: int) -> int:
        """How many chunks the next window owns: the run of mergeable chunks from ``next_chunk``, at
        most ``max_chunks``; 1 when the first is not mergeable (it makes today's window)."""
        count = 0
        while max_chunks > 1 and count < max_chunks and self._mergeable(self.next_chunk + count):
            count += 1
        return max(count, 1)

    def _mergeable(self, index: int) -> bool:
        """Would chunk ``index`` of the segment make a plain window now: all its audio and look-ahead
        here, not the segment's last chunk, and not gated? A merged window of such chunks owns exactly
        their frames, sees at least their context, and runs the model iff each of them would."""
        lay, geo = self.layout, self.geometry
        chunk_start = self.origin + index * lay.chunk
        chunk_end = chunk_start + lay.chunk
        if self.segment_end is None:
            if chunk_end + lay.lookahead > self.buffer.end:
                return False
        elif chunk_end + lay.lookahead > self.segment_end or (
            (chunk_end - self.origin) // geo.stride >= geo.num_frames(self.segment_end - self.origin)
        ):
            return False
        if self.speech_gate is not None and not self.speech_gate.covers(chunk_end):
            return False
        needs_audio = self.speech_gate is None and self.energy_gate_dbfs is not None
        ahead = self.buffer.read(chunk_start, chunk_end + lay.lookahead) if needs_audio else None
        return not self._gated(chunk_start, ahead)

    def _plan_features(self, window: Window, raw: np.ndarray) -> None:
        """Encoder frame range of ``window`` and the block of samples whose features are still missing."""
        geo = self.geometry
        f0 = (window.start - self.origin) // geo.stride
        f1 = f0 + geo.num_frames(window.end - window.start)
        b0 = max(self.features_until, f0)
        window.frames_from, window.frames_to, window.block_from = f0, f1, b0
        if f1 > f0:
            window.kind = WindowKind.FEATURES
        if f1 > b0:
            lo = b0 * geo.stride + self.origin - window.start
            hi = (f1 - 1) * geo.stride + geo.receptive_field + self.origin - window.start
            window.block = self._normalize(raw[lo:hi])
            self.features_until = f1

    def _update_stats(self, end: int) -> None:
        if self.normalization != "running" or end <= self._stats_pos:
            return
        new = self.buffer.read(self._stats_pos, end).astype(np.float64)
        self._sum += float(new.sum())
        self._sum_sq += float(np.dot(new, new))
        self._stats_pos = end

    def _normalize(self, raw: np.ndarray) -> np.ndarray:
        if self.normalization == "window":
            return ((raw - raw.mean()) / np.sqrt(raw.var() + NORMALIZATION_EPSILON)).astype(np.float32)
        n = self._stats_pos - self.origin
        mean = self._sum / n
        var = max(self._sum_sq / n - mean * mean, 0.0)
        return ((raw - np.float32(mean)) / np.float32(math.sqrt(var + NORMALIZATION_EPSILON))).astype(
            np.float32
        )
