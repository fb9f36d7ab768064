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

# Beam search weights of the word LM (pyctcdecode's alpha, beta), the defaults everywhere (daemon,
# transcribe, evaluate). Chosen on the development set, never on the evaluation sets: en-small stage 4 with
# the shipped LM, `conformer-streamer evaluate --sets dev --decoder beam --alpha 0.2,0.3,0.4,0.5,0.6 --beta
# 0,1,2,3,4` (width 32): WER 48.9-49.4% along a ridge (0.3/1, 0.4/2, 0.4/3, 0.5/3), 50.2% at pyctcdecode's
# 0.5/1, 54-59% at the grid's corners; greedy 64.6%. Stage 5 (session 6), `--alpha 0.3,0.4,0.5,0.6 --beta
# 1,2,3`: 44.9% at 0.4/2 (best), 45.1% at 0.3/1, 46.1-50.5% elsewhere; greedy 62.5%.
LM_WEIGHT = 0.4
WORD_SCORE = 2.0
# Beams kept. Development-set WER with those weights: width 8 52.2%, 16 50.1%, 32 49.0%, 64 47.8%, for
# 0.003 / 0.006 / 0.010 CPU s per second of audio at 16 / 32 / 64: 32 stays cheap beside the model
# (streaming RTF ~0.011) for dozens of streams.
BEAM_WIDTH = 32
# Words, not letter soup. A word the LM does not know costs UNKNOWN_WORD_SCORE (pyctcdecode's
# unk_score_offset, added to the word's log10 LM probability; a partial word off the LM's word list pays it
# too, scaled up with its length), so the search keeps to the LM's words unless the audio insists. A word
# whose letters the model barely believes is dropped: its letter confidence (mean posterior of the frames
# inside the word where a letter is the most likely label; 0 when no letter is) must reach
# MIN_WORD_CONFIDENCE, so a run of unsure frames (noise) does not become a word. Both chosen on the
# development set (120 utterances, augmented; docs/RESULTS.md, "Words, not letter soup"): WER 38.5% at
# -10 / -20 (98.7 / 98.9% of the words in the LM), 38.6-38.7% at -40 / -1000 (98.9%); the 0.4 floor keeps
# WER at 38.5% (CER 21.5 -> 22.1%) while it drops 77 of 80 words the model made of 16 kinds of noise
# (0.5: WER 38.7%, CER 23.7%).
UNKNOWN_WORD_SCORE = -20.0
MIN_WORD_CONFIDENCE = 0.4


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
        ids = np.asarray(log_probs).argmax(-1)
        words: list[WordTime] = []
        current, start, end, prev = [], None, None, -1
        for t, i in enumerate(ids.tolist()):
            if i != prev and i != self.blank:
                token = self.labels[i]
                if token == self.delim:
                    if current:
                        words.append(WordTime("".join(current), start, end))
                    current, start = [], None
                elif len(token) == 1:
                    if start is None:
                        start = time_offset + t * self.frame_s
                    current.append(token)
                    end = time_offset + (t + 1) * self.frame_s
            elif i == prev and i != self.blank and current:
                end = time_offset + (t + 1) * self.frame_s
            prev = i
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
