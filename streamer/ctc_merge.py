"""Stage 5: merge the owned CTC frames of successive windows into utterances and words.

Greedy CTC collapse (argmax per frame, merge repeats, drop blanks) is carried across window seams: the
last frame's label is kept, so a character whose frames straddle a seam is emitted once and a repeated
character separated by a blank is emitted twice, exactly as when decoding the concatenated frames in one
go (``tests/test_stream_units.py`` checks this property for random frame sequences and random seams).
The collapse state also continues across utterance boundaries: endpointing only decides where the
text is cut, never what it says.

Words carry start/end in seconds from the stream start (first frame of the first character to the end
of the last character's last frame) and a confidence: the mean posterior of the frames that emitted the
word's characters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.ctc import collapse_with_frames
from streamer.endpointing import Endpointer
from streamer.events import Word

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "[PAD]", "[UNK]")


class Vocabulary:
    """id -> text for CTC labels: which id is blank, which the word delimiter, which print nothing."""

    def __init__(
        self,
        tokens: list[str],
        blank_id: int,
        delimiter_id: int | None,
        silent_ids: set[int],
        lower: bool = False,
    ):
        self.raw_tokens = list(tokens)
        self.lower = lower
        self.tokens = [t.lower() for t in tokens] if lower else tokens
        self.blank_id = blank_id
        self.delimiter_id = -1 if delimiter_id is None else delimiter_id
        self.silent = np.zeros(len(tokens), dtype=bool)  # blank, delimiter, specials: not speech
        for i in silent_ids | {blank_id, self.delimiter_id}:
            if 0 <= i < len(tokens):
                self.silent[i] = True

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> Vocabulary:
        vocab: dict[str, int] = tokenizer.get_vocab()
        tokens = [""] * (max(vocab.values()) + 1)
        for token, i in vocab.items():
            tokens[i] = token
        blank = getattr(tokenizer, "blank_id", None)
        if blank is None:
            blank = tokenizer.pad_token_id
        delimiter = getattr(tokenizer, "word_delimiter_token_id", None)
        if delimiter is None:
            delimiter = vocab.get("|")
        specials = {vocab[t] for t in SPECIAL_TOKENS if t in vocab}
        specials |= set(getattr(tokenizer, "all_special_ids", []) or [])
        specials.discard(delimiter)
        return cls(
            tokens, int(blank), delimiter, specials, lower=bool(getattr(tokenizer, "do_lower_case", False))
        )

    def char(self, token_id: int) -> str:
        if token_id == self.delimiter_id:
            return " "
        if self.silent[token_id]:
            return ""
        return self.tokens[token_id]


@dataclass
class Token:
    id: int
    first: int  # segment frame indices of the frames that emitted it (repeats included)
    last: int
    prob_sum: float
    frames: int = 1


@dataclass
class Utterance:
    """A finished utterance: text, words and the segment frames it spans."""

    text: str
    words: tuple[Word, ...]
    start: float
    end: float
    log_probs: np.ndarray | None = field(default=None, repr=False)  # its frames, for a beam search re-decode
    first_frame: int = 0
    log_probs_start: float = 0.0  # stream time of log_probs[0]


class SeamCarry:
    """Greedy CTC collapse across window seams: the label of the last frame merged, and which frame
    comes next. A label continues a character when the frame before it (even across a seam) had the
    same label, and starts a new one otherwise."""

    def __init__(self, blank_id: int) -> None:
        self.blank_id = blank_id
        self.prev = blank_id
        self.next_frame = 0

    def restart(self) -> None:
        self.prev = self.blank_id
        self.next_frame = 0

    def advance(self, first_frame: int, count: int) -> None:
        """Frames ``[first_frame, first_frame + count)`` are merged next: they must follow the last ones."""
        if first_frame != self.next_frame:
            raise RuntimeError(f"frames out of order: expected frame {self.next_frame}, got {first_frame}")
        self.next_frame = first_frame + count

    def step(self, label: int) -> bool:
        """Carry one frame's label; True when it differs from the previous frame's (a new character,
        unless it is blank)."""
        new = label != self.prev
        self.prev = label
        return new

    def collapse(self, ids: np.ndarray) -> list[tuple[int, int]]:
        """The characters ``ids`` (frames after the carried one) would add, without carrying them."""
        return collapse_with_frames(ids, self.blank_id, self.prev)


class UtteranceBuilder:
    """The open utterance: its characters with their frames, its words, and (for a re-decode of the
    Final) its frames' log-probabilities."""

    def __init__(
        self, vocab: Vocabulary, frame_seconds: float, keep_log_probs: bool = False, sample_rate: int = 16_000
    ) -> None:
        self.vocab = vocab
        self.frame_seconds = frame_seconds
        self.keep_log_probs = keep_log_probs
        self.sample_rate = sample_rate
        self.time_offset = 0.0  # seconds of the segment origin from the stream start
        self.tokens: list[Token] = []
        self.first_frame: int | None = None  # frame of the first character (None: no utterance open)
        self._saved: list[np.ndarray] = []  # the open utterance's frame log-probs, (frames, vocab) each
        self._saved_from = 0
        self._width = len(vocab.raw_tokens)  # log-prob columns (the model's output size once seen)
        # Frames before an utterance's first character kept with it (with keep_log_probs): a grammar
        # scores the utterance from there, so a first letter the greedy labels missed still counts.
        self.lead_frames = 0

    def restart(self, origin_sample: int) -> None:
        """A new segment starts at ``origin_sample``: nothing is open."""
        self.time_offset = origin_sample / self.sample_rate
        self.tokens = []
        self.first_frame = None
        self._saved = []
        self._saved_from = 0

    @property
    def at_word_boundary(self) -> bool:
        """Nothing is pending, or the last label is the word delimiter: a cut here splits no word."""
        return not self.tokens or self.tokens[-1].id == self.vocab.delimiter_id

    def save(self, log_probs: np.ndarray | None, first_frame: int, count: int) -> None:
        """Keep ``count`` frames' log-probabilities (None: gated, all blank) when a re-decode needs them."""
        if not self.keep_log_probs:
            return
        if log_probs is None:
            if not self.tokens and not self.lead_frames:  # gated frames no utterance will decode
                return
            log_probs = np.full((count, self._width), -1e4, dtype=np.float32)
            log_probs[:, self.vocab.blank_id] = 0.0
        else:
            log_probs = np.array(log_probs, dtype=np.float32)
            self._width = log_probs.shape[1]
        if not self._saved:
            self._saved_from = first_frame
        self._saved.append(log_probs)

    def add(self, label: int, frame: int, prob: float, new: bool) -> None:
        """A non-blank frame: a new character (``new``), or one more frame of the last one."""
        if not new:
            if self.tokens and self.tokens[-1].id == label:
                tok = self.tokens[-1]
                tok.last = frame
                tok.prob_sum += prob
                tok.frames += 1
        elif self.tokens or not self.vocab.silent[label]:
            self.tokens.append(Token(label, frame, frame, prob))
            if self.first_frame is None and not self.vocab.silent[label]:
                self.first_frame = frame

    def settle(self, next_frame: int) -> None:
        """After a merge up to ``next_frame``: with no utterance open the next one starts at a later frame,
        so only its lead is kept and memory stays bounded through long non-speech."""
        if not self.tokens:
            self._keep_last(self.lead_frames, next_frame)

    def _keep_last(self, frames: int, next_frame: int) -> None:
        """Drop all saved frames but the last ``frames`` (they end at ``next_frame``)."""
        if frames <= 0 or not self._saved:
            self._saved = []
            return
        saved = self._saved[0] if len(self._saved) == 1 else np.concatenate(self._saved)
        saved = saved[-frames:]
        self._saved = [saved]
        self._saved_from = next_frame - len(saved)

    def close(self, end_frame: int) -> Utterance:
        """The open utterance, ended at ``end_frame``; the frames after it stay saved for the next one."""
        tokens, self.tokens = self.tokens, []
        self.first_frame = None
        log_probs = None
        lo = 0
        if self.keep_log_probs and self._saved:
            frames = np.concatenate(self._saved)
            lo = max(tokens[0].first - self.lead_frames - self._saved_from if tokens else 0, 0)
            hi = end_frame - self._saved_from
            log_probs = frames[lo:hi]
            lo += self._saved_from
            rest = frames[hi:]
            self._saved = [rest] if len(rest) else []
            self._saved_from = end_frame
        words = self.words(tokens)
        text = " ".join(w.word for w in words)
        start = words[0].start if words else self.seconds(end_frame)
        end = words[-1].end if words else start
        first = tokens[0].first if tokens else end_frame
        return Utterance(
            text=text,
            words=tuple(words),
            start=start,
            end=end,
            log_probs=log_probs,
            first_frame=first,
            log_probs_start=self.seconds(lo),
        )

    def finish(self, end_frame: int) -> Utterance | None:
        """Close the open utterance at ``end_frame`` (end of segment); None if it has no text."""
        if self.first_frame is None:
            self.tokens = []
            self._saved = []
            return None
        return self.close(end_frame)

    def open_frames(self) -> tuple[int, np.ndarray] | None:
        """``(first frame, log_probs)`` of the open utterance as far as it has been merged: the frames its
        Final will be decoded from (kept frames only), or None when no utterance is open."""
        if not self.keep_log_probs or not self._saved or not self.tokens:
            return None
        if len(self._saved) > 1:
            self._saved = [np.concatenate(self._saved)]
        first = max(self.tokens[0].first - self.lead_frames, self._saved_from)
        return first, self._saved[0][first - self._saved_from :]

    def seconds(self, frame: int) -> float:
        """Stream time of segment frame ``frame``."""
        return round(self.time_offset + frame * self.frame_seconds, 3)

    def words(self, tokens: list[Token]) -> list[Word]:
        words: list[Word] = []
        current: list[Token] = []
        for tok in [*tokens, None]:
            if tok is None or tok.id == self.vocab.delimiter_id:
                text = "".join(self.vocab.char(t.id) for t in current)
                if text:
                    conf = sum(t.prob_sum for t in current) / sum(t.frames for t in current)
                    words.append(
                        Word(
                            text,
                            self.seconds(current[0].first),
                            self.seconds(current[-1].last + 1),
                            round(min(conf, 1.0), 3),
                        )
                    )
                current = []
            elif not self.vocab.silent[tok.id]:
                current.append(tok)
        return words


class PartialPolicy:
    """What a Partial shows of the open utterance.

    Committed: its completed words (they can no longer change). Tentative: the word in progress plus
    what the look-ahead frames (recomputed by the next window) say, decoded from the current carry.
    Start: the open utterance's first character; with only look-ahead text, the first frame of the
    first tentative character (it may still move); with no text at all, the end of the merged frames
    (a zero-length span there).
    """

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab

    def __call__(
        self, builder: UtteranceBuilder, carry: SeamCarry, lookahead: np.ndarray | None
    ) -> tuple[str, str, float]:
        """(committed, tentative, utterance start); ``lookahead[0]`` is segment frame ``carry.next_frame``."""
        vocab = self.vocab
        text = "".join(vocab.char(t.id) for t in builder.tokens)
        if builder.tokens and builder.tokens[-1].id == vocab.delimiter_id:
            committed, pending = text, ""
        else:
            cut = text.rfind(" ")
            committed, pending = (text[: cut + 1], text[cut + 1 :]) if cut >= 0 else ("", text)
        first_frame = builder.first_frame
        if lookahead is not None and len(lookahead):
            more = carry.collapse(lookahead.argmax(axis=1))
            if not builder.tokens:
                while more and vocab.silent[more[0][0]]:
                    more.pop(0)
            pending += "".join(vocab.char(i) for i, _ in more)
            if first_frame is None and more:
                first_frame = carry.next_frame + more[0][1]
        start = builder.seconds(first_frame if first_frame is not None else carry.next_frame)
        return " ".join(committed.split()), " ".join(pending.split()), start


class CtcMerger:
    """Per-stream merge of owned CTC frames: the seam carry, the utterance builder, the endpointer that
    cuts utterances, and the partial policy."""

    def __init__(
        self,
        vocab: Vocabulary,
        *,
        frame_seconds: float,
        endpointer: Endpointer,
        keep_log_probs: bool = False,
        sample_rate: int = 16_000,
    ) -> None:
        self.vocab = vocab
        self.endpointer = endpointer
        self.carry = SeamCarry(vocab.blank_id)
        self.utterance = UtteranceBuilder(vocab, frame_seconds, keep_log_probs, sample_rate)
        self.partial_policy = PartialPolicy(vocab)
        # (end frame) -> may the open utterance end here? Asked when the endpointer ends one on silence;
        # a grammar keeps an utterance open while its best reading is the middle of a phrase.
        self.close_gate: Callable[[int], bool] | None = None

    @property
    def keep_log_probs(self) -> bool:
        return self.utterance.keep_log_probs

    @keep_log_probs.setter
    def keep_log_probs(self, keep: bool) -> None:
        self.utterance.keep_log_probs = keep

    @property
    def next_frame(self) -> int:
        return self.carry.next_frame

    @property
    def utt_first_frame(self) -> int | None:
        return self.utterance.first_frame

    @property
    def time_offset(self) -> float:
        return self.utterance.time_offset

    def start_segment(self, origin_sample: int) -> None:
        """A new segment (after reset/overload) starts at ``origin_sample``; the collapse carry restarts."""
        self.carry.restart()
        self.utterance.restart(origin_sample)
        self.endpointer.reset()

    def push(self, log_probs: np.ndarray | None, first_frame: int, count: int) -> list[Utterance]:
        """Merge ``count`` owned frames starting at segment frame ``first_frame`` (``None``: all blank).

        Returns the utterances the endpointer closed inside these frames.
        """
        if count <= 0:
            return []
        self.carry.advance(first_frame, count)
        builder = self.utterance
        blank, silent = self.vocab.blank_id, self.vocab.silent
        if log_probs is None:
            ids = [blank] * count
            probs = [1.0] * count
        else:
            log_probs = log_probs[:count]  # (count, vocab)
            best = log_probs.argmax(axis=1)
            ids = best.tolist()
            probs = np.exp(log_probs[np.arange(count), best]).tolist()
        builder.save(log_probs, first_frame, count)
        done: list[Utterance] = []
        for offset, (i, p) in enumerate(zip(ids, probs, strict=True)):
            frame = first_frame + offset
            new = self.carry.step(i)
            if i != blank:
                builder.add(i, frame, p, new)
            if builder.first_frame is not None:
                length = frame - builder.first_frame
                if self.endpointer.observe(not silent[i], length, builder.at_word_boundary) and (
                    self.close_gate is None
                    or length >= self.endpointer.hard_frames
                    or self.close_gate(frame + 1)
                ):
                    done.append(self._close(frame + 1))
        builder.settle(self.carry.next_frame)
        return done

    def finish(self) -> Utterance | None:
        """Close the open utterance (end of segment); None if it has no text."""
        if self.utterance.first_frame is None:
            return self.utterance.finish(self.carry.next_frame)
        return self._close(self.carry.next_frame)

    def _close(self, end_frame: int) -> Utterance:
        self.endpointer.reset()
        return self.utterance.close(end_frame)

    def open_frames(self) -> tuple[int, np.ndarray] | None:
        return self.utterance.open_frames()

    def partial(self, lookahead: np.ndarray | None) -> tuple[str, str, float]:
        """(committed, tentative, utterance start) of the open utterance (:class:`PartialPolicy`)."""
        return self.partial_policy(self.utterance, self.carry, lookahead)
