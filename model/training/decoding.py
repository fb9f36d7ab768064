"""CTC decoders usable per utterance or per streaming chunk: ``decode(log_probs) -> Decoded``.

* :class:`GreedyDecoder` — arg-max, merge repeats, drop blanks; word times from the frames.
* :class:`BeamDecoder` — CTC prefix beam search with a word n-gram LM (ARPA/KenLM binary) through
  ``pyctcdecode`` + ``kenlm`` (the ``lm`` extra); falls back to LM-free beam search without kenlm.

``log_probs`` is a (frames, vocab) array of log-softmax outputs; ``frame_s`` is the model's frame period
(0.02 s for the 320-sample stride).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class WordTime:
    word: str
    start: float
    end: float


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
    """pyctcdecode beam search; ``lm_path`` None → plain beam search (no LM)."""

    def __init__(
        self,
        vocab: dict[str, int],
        lm_path: str | Path | None = None,
        alpha: float = 0.5,
        beta: float = 1.0,
        beam_width: int = 32,
        frame_s: float = 0.02,
        unigrams: list[str] | None = None,
    ) -> None:
        from pyctcdecode import build_ctcdecoder

        labels = _labels(vocab)
        labels = ["" if t == "<pad>" else " " if t == "|" else t for t in labels]
        # special tokens that a CTC model never emits: give them unique placeholder characters
        labels = [chr(0x2400 + i) if t.startswith("<") else t for i, t in enumerate(labels)]
        self.beam_width = beam_width
        self.frame_s = frame_s
        self.decoder = build_ctcdecoder(
            labels,
            kenlm_model_path=str(lm_path) if lm_path else None,
            unigrams=unigrams,
            alpha=alpha,
            beta=beta,
        )

    def decode(self, log_probs: np.ndarray, time_offset: float = 0.0) -> Decoded:
        beams = self.decoder.decode_beams(np.asarray(log_probs, dtype=np.float32), beam_width=self.beam_width)
        text, _, word_frames, _, _ = beams[0]
        words = [
            WordTime(w, time_offset + a * self.frame_s, time_offset + b * self.frame_s)
            for w, (a, b) in word_frames
        ]
        return Decoded(" ".join(text.split()), words)


def read_unigrams(arpa: str | Path) -> list[str]:
    out, in_unigrams = [], False
    with open(arpa, encoding="utf-8") as f:
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
