"""Beam-search re-decoding of finished utterances (``decoder.method = "beam"``), the streaming hook.

Partials stay greedy (they must be cheap and incremental). When the endpointer closes an utterance, its
owned CTC frames (kept by ``ctc_merge.CtcMerger`` with ``keep_log_probs``) are exactly the frames offline
decoding would see for that stretch, so running a prefix beam search with an n-gram LM over them gives the
same result a whole-utterance offline beam search would; the Final carries the beam result.

The search itself is the project's one beam decoder, ``model.training.decoding.BeamDecoder`` (pyctcdecode
and kenlm, the ``lm`` extra). The LM is ``decoder.lm_path``, or else the one shipped in the model's
directory (``lm.arpa.gz``), or else, for an explicit ``"beam"`` only, the training cache's
(``lm/en-3gram.arpa``, written by ``conformer-streamer build-lm``); ``lm_weight``/``word_score`` are its
alpha/beta. Without the ``lm`` extra, ``decoder.method = "beam"``
fails at engine start with a clear message instead of decoding greedily; the default, ``"auto"``, picks
beam search when the model ships its LM (the embedded model does: ``lm.arpa.gz``) and the extra is
installed, greedy otherwise (`resolve_decoder`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from model.hub import default_model_dir
from streamer.ctc_merge import Utterance, Vocabulary
from streamer.events import Word

MODEL_LM_NAMES = ("lm.arpa.gz", "lm.arpa", "lm.bin")  # an LM shipped inside a model directory
DECODER_METHODS = ("auto", "greedy", "beam")

log = logging.getLogger(__name__)
T = TypeVar("T")
SearchResult = tuple[str, tuple[Word, ...]]  # (text, words)


def _model_dir(model_path: str | None) -> Path:
    return default_model_dir() if model_path is None else Path(model_path)


def model_lm(model_path: str | None) -> str | None:
    """The LM shipped inside the model's directory (``None`` = the embedded default model), if any."""
    directory = _model_dir(model_path)
    return next((str(directory / n) for n in MODEL_LM_NAMES if (directory / n).is_file()), None)


def find_lm(model_path: str | None) -> str | None:
    """The n-gram LM that goes with the model: in its directory, else the training cache's."""
    shipped = model_lm(model_path)
    if shipped is not None:
        return shipped
    directory = _model_dir(model_path)
    candidates = [directory / "en-3gram.arpa", directory / "lm" / "en-3gram.arpa"]
    from model.training.corpus import home

    candidates.append(Path(home()) / "lm" / "en-3gram.arpa")
    return next((str(c) for c in candidates if c.is_file()), None)


def beam_search_installed() -> bool:
    """pyctcdecode and kenlm (the ``lm`` extra) are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("pyctcdecode", "kenlm"))


def resolve_decoder(method: str, lm_path: str | None, model_path: str | None) -> tuple[str, str | None, str]:
    """``(method, lm_path, why)`` with ``"auto"`` settled: beam search with the model's own LM when the
    ``lm`` extra is installed and the model ships an LM (or ``lm_path`` names one), else greedy.

    ``auto`` never borrows the training cache's LM: a model with another vocabulary would get an LM whose
    words it cannot spell. An explicit ``beam`` still searches there (see `find_lm`). ``lm_path="none"``
    (the command lines' ``--lm none``) means no LM: a plain beam search if ``beam`` was asked for, else
    greedy.
    """
    if method not in DECODER_METHODS:
        raise ValueError(f"decoder method must be one of {DECODER_METHODS}, got {method!r}")
    if method == "greedy":
        return "greedy", None, "asked for"
    if lm_path == "none":
        return ("beam", None, "asked for, without an LM") if method == "beam" else ("greedy", None, "no LM")
    if method == "beam":
        return "beam", lm_path or find_lm(model_path), "asked for"
    lm_path = lm_path or model_lm(model_path)
    if lm_path is None:
        return "greedy", None, "auto: the model ships no LM"
    if not beam_search_installed():
        return "greedy", None, "auto: pyctcdecode/kenlm not installed (pip install 'conformer-streamer[lm]')"
    return "beam", lm_path, "auto: the model's LM and the lm extra are present"


def load_beam_search(
    method: str,
    lm_path: str | None,
    model_path: str | None,
    build: Callable[[str | None], T],
    what: str = "decoder",
) -> T | None:
    """The beam search ``method`` settles on (`resolve_decoder`), built by ``build(lm_path)``, or None for
    greedy. An explicit ``beam`` that cannot be built raises; ``auto`` only promised the better decoder
    when it works, so a broken LM file falls back to greedy with a warning (it must not stop a daemon)."""
    settled, lm_path, why = resolve_decoder(method, lm_path, model_path)
    if settled == "greedy":
        log.info("%s: greedy (%s)", what, why)
        return None
    try:
        search = build(lm_path)
    except (OSError, RuntimeError, ValueError) as error:
        if method != "auto":
            raise
        log.warning("%s: greedy, the model's LM %s did not load: %s", what, lm_path, error)
        return None
    log.info("%s: beam (%s), LM %s", what, why, lm_path or "none")
    return search


def word_confidence(frame_confidence: np.ndarray, first: int, end: int) -> float:
    """Mean of the per-frame confidence (the most likely token's probability) over a word's frames
    ``[first, end)``, at least one frame: what greedy and beam words both carry."""
    frames = frame_confidence[first : max(end, first + 1)]
    return float(frames.mean()) if len(frames) else 0.0


class UtteranceSearch:
    """A finals' search: ``decode_utterance(utterance, frame_seconds, hotwords) -> (text, words)`` over an
    utterance's kept frames, answered by ``decode_frames`` (plain arrays and tuples, so that a child
    process can answer it: `streamer.search_process.BeamSearchProcess`)."""

    def decode_utterance(
        self, utterance: Utterance, frame_seconds: float, hotwords: tuple[Any, ...] = ()
    ) -> SearchResult:
        """``hotwords``: `streamer.grammar.Hotword` phrases to favour; pyctcdecode takes one weight for
        all, so the largest boost given applies."""
        boosts = [(h.phrase, h.boost) for h in hotwords]
        return self.decode_frames(utterance.log_probs, utterance.log_probs_start, frame_seconds, boosts)

    def decode_frames(
        self,
        log_probs: np.ndarray,
        start_s: float,
        frame_seconds: float,
        hotwords: Sequence[tuple[str, float]] = (),
    ) -> SearchResult:
        """``(text, words)`` of (frames, vocab) ``log_probs`` whose first frame starts at ``start_s``;
        ``hotwords`` as ``(phrase, boost)`` pairs."""
        return self._search(np.asarray(log_probs, dtype=np.float32), start_s, frame_seconds, list(hotwords))

    def _search(self, lp: np.ndarray, start_s: float, frame_seconds: float, hotwords: list) -> SearchResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the search holds outside this process (nothing here; the child process's does)."""


class UtteranceBeamSearch(UtteranceSearch):
    """The project's beam search (``model.training.decoding.BeamDecoder``) in the calling thread."""

    def __init__(self, vocab: Vocabulary, settings: Any, lm_path: str | None) -> None:
        from model.training.decoding import BeamDecoder

        self.vocab = vocab
        self.decoder = BeamDecoder(
            {t: i for i, t in enumerate(vocab.raw_tokens)},
            lm_path,
            alpha=settings.lm_weight,
            beta=settings.word_score,
            beam_width=settings.beam_width,
            blank=vocab.raw_tokens[vocab.blank_id],
            delimiter=vocab.raw_tokens[vocab.delimiter_id] if vocab.delimiter_id >= 0 else "|",
            unknown_word_score=settings.unknown_word_score,
            min_word_confidence=settings.min_word_confidence,
        )

    def _search(self, lp: np.ndarray, start_s: float, frame_seconds: float, hotwords: list) -> SearchResult:
        self.decoder.frame_s = frame_seconds
        extra = {}
        if hotwords:
            extra = {
                "hotwords": [phrase for phrase, _ in hotwords],
                "hotword_weight": max(boost for _, boost in hotwords),
            }
        decoded = self.decoder.decode(lp, time_offset=start_s, **extra)
        frame_confidence = np.exp(lp.max(axis=1))
        words = tuple(
            Word(
                w.word.lower() if self.vocab.lower else w.word,
                round(w.start, 3),
                round(w.end, 3),
                round(word_confidence(frame_confidence, *w.frames), 3),
            )
            for w in decoded.words
        )
        return " ".join(w.word for w in words), words


def make_beam_decoder(settings: Any, vocab: Vocabulary, lm_path: str | None) -> UtteranceBeamSearch:
    """The engine's beam search with the LM at ``lm_path`` (see `resolve_decoder`), or none."""
    try:
        return UtteranceBeamSearch(vocab, settings, lm_path)
    except ImportError as exc:
        raise RuntimeError(
            f"decoder.method=beam needs the lm extra: pip install 'conformer-streamer[lm]' ({exc})"
        ) from None
