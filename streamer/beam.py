"""Beam-search re-decoding of finished utterances (``decoder.method = "beam"``), the streaming hook.

Partials stay greedy (they must be cheap and incremental). When the endpointer closes an utterance, its
owned CTC frames (kept by ``ctc_merge.CtcMerger`` with ``keep_log_probs``) are exactly the frames offline
decoding would see for that stretch, so running a prefix beam search with an n-gram LM over them gives the
same result a whole-utterance offline beam search would; the Final carries the beam result.

Backend: the project's decoder, ``model.training.decoding.BeamDecoder`` (pyctcdecode + kenlm, the ``lm``
extra), with ``decoder.lm_path`` or else the first LM found in the model directory or the training cache
(``lm/en-3gram.arpa``); ``lm_weight``/``word_score`` are its alpha/beta. Without that module a local
pyctcdecode wrapper (no LM unless kenlm is importable) is used. Without pyctcdecode,
``decoder.method = "beam"`` fails at engine start with a clear message instead of decoding greedily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamer.ctc_merge import Utterance, Vocabulary
from streamer.events import Word

_PLACEHOLDER = 0xE000  # pyctcdecode wants one character per label: specials become private-use chars


class PyCtcDecodeBeam:
    def __init__(self, vocab: Vocabulary, beam_width: int, lm_path: str | None, alpha: float, beta: float):
        from pyctcdecode import build_ctcdecoder

        self.vocab = vocab
        self.beam_width = beam_width
        labels = []
        for i, token in enumerate(vocab.tokens):
            if i == vocab.blank_id:
                labels.append("")
            elif i == vocab.delimiter_id:
                labels.append(" ")
            elif vocab.silent[i] or len(token) != 1:
                labels.append(chr(_PLACEHOLDER + i))
            else:
                labels.append(token.lower() if lm_path else token)
        self.silent_ids = [
            i for i in range(len(labels)) if vocab.silent[i] and i not in (vocab.blank_id, vocab.delimiter_id)
        ]
        kwargs: dict[str, Any] = {}
        if lm_path:
            kwargs.update(kenlm_model_path=str(lm_path), alpha=alpha, beta=beta)
        self.decoder = build_ctcdecoder(labels, **kwargs)
        self.upper = bool(lm_path) and any(t.isupper() for t in vocab.tokens if len(t) == 1)

    def decode_utterance(self, utterance: Utterance, frame_seconds: float) -> tuple[str, tuple[Word, ...]]:
        lp = np.array(utterance.log_probs, dtype=np.float32)
        blank = self.vocab.blank_id
        if self.silent_ids:  # specials decode as nothing: their mass goes to blank
            lp[:, blank] = np.logaddexp.reduce(lp[:, [blank, *self.silent_ids]], axis=1)
            lp[:, self.silent_ids] = -1e4
        _, _, word_frames, *_ = self.decoder.decode_beams(lp, beam_width=self.beam_width)[0]
        conf = np.exp(lp.max(axis=1))
        words = []
        for word, (start, end) in word_frames:
            word = "".join(c for c in word if ord(c) < _PLACEHOLDER)
            if not word:
                continue
            if self.upper:
                word = word.upper()
            t0 = utterance.log_probs_start + start * frame_seconds
            t1 = utterance.log_probs_start + end * frame_seconds
            words.append(Word(word, round(t0, 3), round(t1, 3), round(float(conf[start:end].mean()), 3)))
        return " ".join(w.word for w in words), tuple(words)


class ProjectBeam:
    """Adapter: ``model.training.decoding.BeamDecoder`` over a finished utterance's frames."""

    def __init__(self, decoding: Any, vocab: Vocabulary, settings: Any, lm_path: str | None) -> None:
        unigrams = decoding.read_unigrams(lm_path) if lm_path and str(lm_path).endswith(".arpa") else None
        self.vocab = vocab
        self.decoder = decoding.BeamDecoder(
            {t: i for i, t in enumerate(vocab.raw_tokens)},
            lm_path,
            alpha=settings.lm_weight,
            beta=settings.word_score,
            beam_width=settings.beam_width,
            unigrams=unigrams,
        )

    def decode_utterance(self, utterance: Utterance, frame_seconds: float) -> tuple[str, tuple[Word, ...]]:
        lp = np.asarray(utterance.log_probs, dtype=np.float32)
        self.decoder.frame_s = frame_seconds
        decoded = self.decoder.decode(lp, time_offset=utterance.log_probs_start)
        conf = np.exp(lp.max(axis=1))
        words = []
        for w in decoded.words:
            a = max(0, round((w.start - utterance.log_probs_start) / frame_seconds))
            b = max(a + 1, round((w.end - utterance.log_probs_start) / frame_seconds))
            text = w.word.lower() if self.vocab.lower else w.word
            words.append(Word(text, round(w.start, 3), round(w.end, 3), round(float(conf[a:b].mean()), 3)))
        return " ".join(w.word for w in words), tuple(words)


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


def make_beam_decoder(settings: Any, vocab: Vocabulary, model_path: str | None) -> Any:
    """A decoder with ``decode_utterance(utterance, frame_seconds) -> (text, words)``."""
    lm_path = settings.lm_path or find_lm(model_path)
    try:
        from model.training import decoding
    except ImportError:
        decoding = None
    if decoding is not None and hasattr(decoding, "BeamDecoder"):
        try:
            return ProjectBeam(decoding, vocab, settings, lm_path)
        except ImportError as exc:
            raise RuntimeError(
                f"decoder.method=beam needs the lm extra (pyctcdecode, kenlm): {exc}"
            ) from None
    if lm_path is not None:
        try:
            import kenlm  # noqa: F401
        except ImportError:
            raise RuntimeError(
                f"decoder.method=beam with the n-gram LM {lm_path} needs kenlm (pip install kenlm) "
                "or model.training.decoding"
            ) from None
    try:
        return PyCtcDecodeBeam(vocab, settings.beam_width, lm_path, settings.lm_weight, settings.word_score)
    except ImportError:
        raise RuntimeError(
            "decoder.method=beam needs pyctcdecode (pip install 'conformer-streamer[lm]')"
        ) from None
