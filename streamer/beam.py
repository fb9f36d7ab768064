"""Beam-search re-decoding of finished utterances (``decoder.method = "beam"``), the streaming hook.

Partials stay greedy (they must be cheap and incremental). When the endpointer closes an utterance, its
owned CTC frames (kept by ``ctc_merge.CtcMerger`` with ``keep_log_probs``) are exactly the frames offline
decoding would see for that stretch, so running a prefix beam search with an n-gram LM over them gives the
same result a whole-utterance offline beam search would; the Final carries the beam result.

The search itself is the project's one beam decoder, ``model.training.decoding.BeamDecoder`` (pyctcdecode
and kenlm, the ``lm`` extra). The LM is ``decoder.lm_path``, or else the first one found beside the model
or in the training cache (``lm/en-3gram.arpa``, written by ``conformer-streamer build-lm``);
``lm_weight``/``word_score`` are its alpha/beta. Without the ``lm`` extra, ``decoder.method = "beam"``
fails at engine start with a clear message instead of decoding greedily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamer.ctc_merge import Utterance, Vocabulary
from streamer.events import Word


def find_lm(model_path: str | None) -> str | None:
    """The n-gram LM that goes with the model: in its directory, else the training cache's."""
    candidates = []
    if model_path is None:
        try:
            from model import default_model_dir

            model_path = str(default_model_dir())
        except ImportError:
            pass
    if model_path:
        candidates += [
            Path(model_path) / n for n in ("lm.arpa", "lm.bin", "en-3gram.arpa", "lm/en-3gram.arpa")
        ]
    try:
        from model.training.corpus import home

        candidates.append(Path(home()) / "lm" / "en-3gram.arpa")
    except Exception:
        pass
    return next((str(c) for c in candidates if c.is_file()), None)


def word_confidence(frame_confidence: np.ndarray, first: int, end: int) -> float:
    """Mean of the per-frame confidence (the most likely token's probability) over a word's frames
    ``[first, end)``, at least one frame: what greedy and beam words both carry."""
    frames = frame_confidence[first : max(end, first + 1)]
    return float(frames.mean()) if len(frames) else 0.0


class UtteranceBeamSearch:
    """``decode_utterance(utterance, frame_seconds) -> (text, words)`` over an utterance's kept frames."""

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
        )

    def decode_utterance(self, utterance: Utterance, frame_seconds: float) -> tuple[str, tuple[Word, ...]]:
        lp = np.asarray(utterance.log_probs, dtype=np.float32)
        self.decoder.frame_s = frame_seconds
        decoded = self.decoder.decode(lp, time_offset=utterance.log_probs_start)
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


def make_beam_decoder(settings: Any, vocab: Vocabulary, model_path: str | None) -> UtteranceBeamSearch:
    """The engine's beam search, with ``settings.lm_path`` or the LM found for the model."""
    lm_path = settings.lm_path or find_lm(model_path)
    try:
        return UtteranceBeamSearch(vocab, settings, lm_path)
    except ImportError as exc:
        raise RuntimeError(
            f"decoder.method=beam needs the lm extra: pip install 'conformer-streamer[lm]' ({exc})"
        ) from None
