"""Offline windows: how a whole recording goes through the model when it is not streamed.

Recordings up to 15 s go through the model in one pass. Longer ones are cut into overlapping 15 s
windows, and each window contributes only the frames away from its edges, where the model saw enough
context on both sides; the kept frames tile the recording's frames exactly once and are decoded as one
sequence, so words cut by a window edge come out whole. ``conformer-streamer transcribe`` and the
engine's offline reference (`RecognitionEngine.transcribe`) both use this layout.

Why 15 s and not a whole minute: with the embedded model, 62 s of synthesized sentences came out better
in 15 s windows than in one pass, for one voice (CER 7.2% vs 8.0%, kal16; 8.3% vs 9.0%, awb) and far
more when the voice changes between sentences (13-14% vs 23-24%); 10 s windows were no better
(`bench/bench_offline_windows.py`). The model was trained on inputs of at most 16 s.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

WHOLE_FILE_LIMIT_S = 15.0  # longer recordings are windowed
WINDOW_S = 15.0
WINDOW_CONTEXT_S = 3.0  # frames this close to a window edge (inside the recording) come from a neighbour


def offline_windows(
    num_samples: int,
    frame_samples: int,
    sample_rate: int,
    window_s: float = WINDOW_S,
    context_s: float = WINDOW_CONTEXT_S,
    whole_limit_s: float = WHOLE_FILE_LIMIT_S,
) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(first_sample, end_sample, first_kept_frame, end_kept_frame)`` per window.

    One window for the whole recording up to ``whole_limit_s``. Windows start on frame boundaries, so
    a window's local frame ``i`` is global frame ``first_sample // frame_samples + i``; the kept ranges
    tile the recording's frames without gaps or overlap. The last window's kept range is open-ended
    (``sys.maxsize``): it keeps whatever frames it produces.
    """
    if num_samples <= whole_limit_s * sample_rate:
        yield 0, num_samples, 0, sys.maxsize
        return
    window = max(1, round(window_s * sample_rate / frame_samples)) * frame_samples
    # At least one frame: a window's last frame would otherwise need samples past the window's end.
    context = max(1, round(context_s * sample_rate / frame_samples)) * frame_samples
    step = window - 2 * context
    if step <= 0:
        raise ValueError("window must be longer than twice its context")
    start = 0
    while True:
        stop = min(start + window, num_samples)
        keep_from = 0 if start == 0 else context // frame_samples
        is_last = stop >= num_samples
        keep_to = sys.maxsize if is_last else (window - context) // frame_samples
        yield start, stop, keep_from, keep_to
        if is_last:
            return
        start += step
