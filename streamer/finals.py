"""How an utterance's Final is decoded: greedy text, a grammar, or the beam search (with hotwords).

:func:`final_method` is the choice, shared by the engine and ``conformer-streamer transcribe``;
:class:`FinalDecoder` applies it to the utterances the streaming merger closes.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from streamer.events import Alternative, Final, Word
from streamer.grammar import DecodingOptions, GrammarError, align_words

if TYPE_CHECKING:
    from streamer.config import Settings
    from streamer.ctc_merge import Utterance, Vocabulary

FinalMethod = Literal["grammar", "beam", "greedy"]


def final_method(*, grammar: bool, beam: bool, hotwords: bool) -> FinalMethod:
    """A grammar constrains the text whenever there is one; else the beam search runs when it is on or
    hotwords need it (a plain one without LM when finals are greedy); else the greedy text stands."""
    if grammar:
        return "grammar"
    if beam or hotwords:
        return "beam"
    return "greedy"


class FinalDecoder:
    """The finals' decoder of one engine: its beam search (None: greedy finals), built once."""

    def __init__(self, settings: Settings, vocab: Vocabulary, frame_seconds: float) -> None:
        from streamer.beam import load_beam_search
        from streamer.search_process import make_finals_search

        self.settings = settings
        self.vocab = vocab
        self.frame_seconds = frame_seconds
        self.beam: Any = load_beam_search(
            settings.decoder.method,
            settings.decoder.lm_path,
            settings.model.path,
            lambda lm_path: make_finals_search(settings.decoder, vocab, lm_path),
            what="finals decoder",
        )
        self._plain_beam: Any = None  # hotwords without the beam search: a plain one, built on demand
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the beam search's child process, if it has one (it restarts on the next search)."""
        if self.beam is not None:
            self.beam.close()

    def keeps_frames(self, decoding: DecodingOptions) -> bool:
        """Does a Final under ``decoding`` need its frames' log-probabilities (a re-decode)?"""
        return self.beam is not None or decoding.keeps_frames

    def hotword_beam(self) -> Any:
        """A beam search without LM for hotwords when the finals are greedy (built once); GrammarError
        when the beam search is not installed."""
        with self._lock:
            if self._plain_beam is None:
                from streamer.beam import make_beam_decoder

                try:
                    self._plain_beam = make_beam_decoder(self.settings.decoder, self.vocab, None)
                except RuntimeError as exc:
                    raise GrammarError(f"hotwords need the beam search: {exc}") from None
            return self._plain_beam

    def decode(
        self, stream_id: str, utterance: Utterance, decoding: DecodingOptions, words: bool = True
    ) -> Final:
        """An utterance's Final (:func:`final_method`); greedy when its frames were not kept."""
        text, found, start, end = utterance.text, utterance.words, utterance.start, utterance.end
        alternatives: tuple[Alternative, ...] = ()
        lp = utterance.log_probs
        method = final_method(
            grammar=decoding.grammar is not None, beam=self.beam is not None, hotwords=bool(decoding.hotwords)
        )
        if lp is not None and len(lp):
            if method == "grammar":
                assert decoding.grammar is not None
                result = decoding.grammar.decode(lp, decoding.max_alternatives)

                def align(phrase: str, confidence: float) -> tuple[Word, ...]:
                    return align_words(
                        phrase, lp, self.vocab, self.frame_seconds, utterance.log_probs_start, confidence
                    )

                text, found = result.text, align(result.text, result.confidence)
                start, end = found[0].start, found[-1].end
                alternatives = tuple(
                    Alternative(a.text, a.confidence, align(a.text, a.confidence))
                    for a in result.alternatives
                )
            elif method == "beam":
                text, found = self._beam_decode(utterance, decoding.hotwords)
        if decoding.max_alternatives and not alternatives:
            confidence = float(np.mean([w.confidence for w in found])) if found else 1.0
            alternatives = (Alternative(text, round(confidence, 6), found),)
        if not words:
            found = ()
            alternatives = tuple(Alternative(a.text, a.confidence) for a in alternatives)
        return Final(stream_id, text, found, start, end, alternatives=alternatives)

    def _beam_decode(self, utterance: Utterance, hotwords: tuple = ()) -> tuple[str, tuple[Word, ...]]:
        beam = self.beam if self.beam is not None else self.hotword_beam()
        return beam.decode_utterance(utterance, self.frame_seconds, hotwords=hotwords)
