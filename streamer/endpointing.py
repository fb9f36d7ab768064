"""When does an utterance end? Decided from the model's own output, frame by frame.

The CTC model labels each 20 ms frame; a frame is *speech* when its best label is a character (not
blank, not the word delimiter ``|``). An open utterance (one that has emitted a character) ends after
``min_silence_s`` of consecutive non-speech frames. An utterance that has run ``max_utterance_s`` ends at
the next word boundary (a delimiter just emitted), or unconditionally at 1.25x the limit, so captions
and memory stay bounded even when the speaker never pauses. The speech gate (``streamer.vad``, Silero
VAD) or the energy gate (``streamer.windowing``) is the cheap first stage: gated windows arrive here as
all-blank frames, so an utterance closes ``min_silence_s`` into the VAD's silence, and a window the gate
knows to be silent comes without waiting for its look-ahead.
"""

from __future__ import annotations

HARD_LIMIT_FACTOR = 1.25


class Endpointer:
    def __init__(self, min_silence_s: float, max_utterance_s: float, frame_seconds: float) -> None:
        self.min_silence_frames = _frames(min_silence_s, frame_seconds)
        self.max_frames = _frames(max_utterance_s, frame_seconds)
        self.hard_frames = max(self.max_frames, _frames(max_utterance_s * HARD_LIMIT_FACTOR, frame_seconds))
        self.silence_run = 0

    def observe(self, is_speech: bool, utterance_frames: int, at_word_boundary: bool) -> bool:
        """Feed one frame of an open utterance; True = the utterance ends before the next frame.

        ``utterance_frames``: frames since the utterance's first character; ``at_word_boundary``: the last
        emitted label is the word delimiter (or nothing is pending), so splitting here cuts no word.
        """
        self.silence_run = 0 if is_speech else self.silence_run + 1
        if self.silence_run >= self.min_silence_frames:
            return True
        if utterance_frames >= self.max_frames and at_word_boundary and not is_speech:
            return True
        return utterance_frames >= self.hard_frames

    def reset(self) -> None:
        self.silence_run = 0


def _frames(seconds: float, frame_seconds: float) -> int:
    """Seconds -> frames (at least 1); infinite or huge values mean 'never'."""
    if not seconds < 1e9:
        return 1 << 62
    return max(1, round(seconds / frame_seconds))
