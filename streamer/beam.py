"""Beam-search re-decoding of finished utterances (``decoder.method = "beam"``), the streaming hook.

Partials stay greedy (they must be cheap and incremental). When the endpointer closes an utterance, its
owned CTC frames (kept by ``ctc_merge.CtcMerger`` with ``keep_log_probs``) are exactly the frames offline
decoding would see for that stretch, so running a prefix beam search with an n-gram LM over them gives the
same result a whole-utterance offline beam search would; the Final carries the beam result.

Backends, in order: the project's decoder (``model.training.decoding``, when it provides
``BeamSearchDecoder``/``build_decoder``), else pyctcdecode (the ``lm`` extra; an ARPA/KenLM model is
used when ``kenlm`` is importable). Without either, ``decoder.method = "beam"`` fails at engine start
with a clear message instead of silently decoding greedily.
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


def make_beam_decoder(settings: Any, vocab: Vocabulary, model_path: str | None) -> Any:
    """A decoder with ``decode_utterance(utterance, frame_seconds) -> (text, words)``."""
    lm_path = settings.lm_path
    if lm_path is None and model_path:
        for name in ("lm.arpa", "lm.bin", "lm/en-3gram.arpa"):
            if (Path(model_path) / name).is_file():
                lm_path = str(Path(model_path) / name)
                break
    try:
        from model.training import decoding  # type: ignore[attr-defined]
    except ImportError:
        decoding = None
    if decoding is not None and hasattr(decoding, "make_streaming_decoder"):
        return decoding.make_streaming_decoder(settings, vocab, lm_path)
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
