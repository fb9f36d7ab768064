"""CTC decoders usable per utterance or per streaming chunk: ``decode(log_probs) -> Decoded``.

* :class:`GreedyDecoder` — arg-max, merge repeats, drop blanks; word times from the frames.
* :class:`BeamDecoder` — CTC prefix beam search with a word n-gram LM (ARPA/KenLM binary) through
  ``pyctcdecode`` + ``kenlm`` (the ``lm`` extra); falls back to LM-free beam search without kenlm.

``log_probs`` is a (frames, vocab) array of log-softmax outputs; ``frame_s`` is the model's frame period
(0.02 s for the 320-sample stride).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.ctc import (
    BEAM_WIDTH,
    LM_WEIGHT,
    MIN_WORD_CONFIDENCE,
    UNKNOWN_WORD_SCORE,
    WORD_SCORE,
    ctc_runs,
)


@dataclass
class WordTime:
    word: str
    start: float
    end: float
    frames: tuple[int, int] = (0, 0)  # [first, end) frame of the word in the decoded array


@dataclass
class Decoded:
    text: str
    words: list[WordTime] = field(default_factory=list)


def _labels(vocab: dict[str, int]) -> list[str]:
    labels = [""] * len(vocab)
    for token, i in vocab.items():
        labels[i] = token
    return labels


class GreedyDecoder:
    def __init__(self, vocab: dict[str, int], blank_id: int = 0, delimiter: str = "|", frame_s: float = 0.02):
        self.labels = _labels(vocab)
        self.blank = blank_id
        self.delim = delimiter
        self.frame_s = frame_s

    def decode(self, log_probs: np.ndarray, time_offset: float = 0.0) -> Decoded:
        words: list[WordTime] = []
        current: list[str] = []
        start = end = 0.0
        for run in ctc_runs(np.asarray(log_probs).argmax(-1), self.blank):
            token = self.labels[run.label]
            if token == self.delim:
                if current:
                    words.append(WordTime("".join(current), start, end))
                current = []
            elif len(token) == 1:
                if not current:
                    start = time_offset + run.first * self.frame_s
                current.append(token)
                end = time_offset + (run.last + 1) * self.frame_s
        if current:
            words.append(WordTime("".join(current), start, end))
        return Decoded(" ".join(w.word for w in words), words)


class BeamDecoder:
    """CTC prefix beam search (pyctcdecode) with an optional word n-gram LM (kenlm reads ARPA or binary).

    The one beam search of the project: ``evaluate``, ``transcribe --decoder beam`` and the streaming
    engine's finals all decode through it. Special tokens (``<s>``, ``</s>``, ``<unk>``) carry no text: their
    probability moves to blank before the search, so they neither print nor split a word. ``lm_path`` None
    gives a plain beam search. An ARPA file also supplies the LM's word list (``unigrams``), which
    pyctcdecode uses to score partial words.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        lm_path: str | Path | None = None,
        alpha: float = LM_WEIGHT,
        beta: float = WORD_SCORE,
        beam_width: int = BEAM_WIDTH,
        frame_s: float = 0.02,
        unigrams: list[str] | None = None,
        blank: str = "<pad>",
        delimiter: str = "|",
        unknown_word_score: float = UNKNOWN_WORD_SCORE,
        min_word_confidence: float = MIN_WORD_CONFIDENCE,
    ) -> None:
        from pyctcdecode import build_ctcdecoder

        tokens = _labels(vocab)
        self.blank_id = vocab.get(blank, 0)
        self.silent_ids = [
            i for i, t in enumerate(tokens) if i != self.blank_id and t != delimiter and len(t) != 1
        ]
        labels = []
        for i, token in enumerate(tokens):
            if i == self.blank_id:
                labels.append("")
            elif token == delimiter:
                labels.append(" ")
            elif i in self.silent_ids:  # pyctcdecode wants one unique character per label
                labels.append(chr(0x2400 + i))
            else:
                labels.append(token)
        if lm_path and unigrams is None and str(lm_path).endswith((".arpa", ".arpa.gz")):
            unigrams = read_unigrams(lm_path)
        self.beam_width = beam_width
        self.frame_s = frame_s
        self.min_word_confidence = min_word_confidence
        # labels that are not letters: blank, the delimiter and the silent specials
        self.non_letter_ids = np.array(
            [i for i, t in enumerate(tokens) if i == self.blank_id or t == delimiter or i in self.silent_ids]
        )
        with _quiet_native_stderr():  # kenlm draws a loading bar on fd 2; its errors still raise
            self.decoder = build_ctcdecoder(
                labels,
                kenlm_model_path=str(lm_path) if lm_path else None,
                unigrams=unigrams,
                alpha=alpha,
                beta=beta,
                unk_score_offset=unknown_word_score,
            )

    def decode(
        self,
        log_probs: np.ndarray,
        time_offset: float = 0.0,
        hotwords: list[str] | None = None,
        hotword_weight: float = 10.0,
    ) -> Decoded:
        """``hotwords``: phrases (in the labels' case) whose prefixes and completions get ``hotword_weight``
        added per word by pyctcdecode's hotword scorer (one weight for all)."""
        lp = np.array(log_probs, dtype=np.float32)  # a copy: the caller's array stays as it was
        if self.silent_ids:
            lp[:, self.blank_id] = np.logaddexp.reduce(lp[:, [self.blank_id, *self.silent_ids]], axis=1)
            lp[:, self.silent_ids] = -1e4
        extra = {"hotwords": list(hotwords), "hotword_weight": hotword_weight} if hotwords else {}
        text, _, word_frames, _, _ = self.decoder.decode_beams(lp, beam_width=self.beam_width, **extra)[0]
        if self.min_word_confidence > 0:
            word_frames = [
                (w, (a, b))
                for w, (a, b) in word_frames
                if self.letter_confidence(lp, a, b) >= self.min_word_confidence
            ]
            text = " ".join(w for w, _ in word_frames)
        words = [
            WordTime(w, time_offset + a * self.frame_s, time_offset + b * self.frame_s, (a, b))
            for w, (a, b) in word_frames
        ]
        return Decoded(" ".join(text.split()), words)

    def letter_confidence(self, log_probs: np.ndarray, first: int, end: int) -> float:
        """Mean posterior of the frames in ``[first, end)`` whose most likely label is a letter (0 if none)."""
        span = log_probs[first : max(end, first + 1)]  # (frames, vocab)
        best = span.argmax(axis=1)
        letters = ~np.isin(best, self.non_letter_ids)
        if not letters.any():
            return 0.0
        return float(np.exp(span[letters, best[letters]]).mean())


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (output of C++ code that Python cannot catch)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def read_unigrams(arpa: str | Path) -> list[str]:
    """The words of an ARPA file (plain or gzip-compressed, as kenlm reads both), markers left out."""
    out, in_unigrams = [], False
    opener = gzip.open if str(arpa).endswith(".gz") else open
    with opener(arpa, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
                continue
            if in_unigrams:
                if not line or line.startswith("\\"):
                    break
                parts = line.split("\t")
                if len(parts) >= 2 and not parts[1].startswith("<"):
                    out.append(parts[1])
    return out
