"""The worker side of one stream: its windows' model output in, its Partial/Final/EndOfStream out.

A :class:`TranscriptBuilder` merges each window's owned frames (``ctc_merge.CtcMerger``: seam carry,
endpointing, words), decodes the utterances the merger closes into Finals (``finals.FinalDecoder``)
under the stream's decoding options, and makes the Partials: greedy, or the best grammar prefix when a
grammar constrains the stream. Options sent by ``configure`` apply from the next utterance.
"""

from __future__ import annotations

import threading

import numpy as np

from streamer.config import Settings
from streamer.ctc_merge import CtcMerger, Utterance, Vocabulary
from streamer.endpointing import Endpointer
from streamer.events import EndOfStream, Event, Final, Partial
from streamer.finals import FinalDecoder
from streamer.grammar import GRAMMAR_LEAD_S, DecodingOptions, Grammar, GrammarSearch
from streamer.pcm import MODEL_SAMPLE_RATE
from streamer.windowing import FrameGeometry, Window


class TranscriptBuilder:
    """Merger and utterance builder of one stream. Worker side, except :meth:`configure`."""

    def __init__(
        self,
        stream_id: str,
        settings: Settings,
        vocab: Vocabulary,
        geometry: FrameGeometry,
        finals: FinalDecoder,
        *,
        partials: bool,
        words: bool,
        decoding: DecodingOptions | None,
    ) -> None:
        self.stream_id = stream_id
        self.partials = partials
        self.words = words
        self.finals = finals
        self.stride = geometry.stride
        frame_s = geometry.stride / MODEL_SAMPLE_RATE
        endpoint = settings.endpoint
        self.merger = CtcMerger(
            vocab,
            frame_seconds=frame_s,
            endpointer=Endpointer(endpoint.min_silence_s, endpoint.max_utterance_s, frame_s),
            keep_log_probs=finals.beam is not None,
        )
        self.generation = 0  # the segment being merged; windows of older ones were dropped
        self.decoding = DecodingOptions()
        self._options_lock = threading.Lock()
        # (sample position, options): from the first utterance that starts after that much audio
        self._next_decoding: tuple[int, DecodingOptions] | None = None if decoding is None else (0, decoding)
        self._grammar_search: tuple[int, GrammarSearch] | None = None  # (first frame, search) for partials
        self._adopt_decoding()

    # -- client side -------------------------------------------------------------------------------

    def configure(self, from_sample: int, decoding: DecodingOptions) -> None:
        """Decode with ``decoding`` from the first utterance that starts after sample ``from_sample``."""
        with self._options_lock:
            self._next_decoding = (from_sample, decoding)

    # -- worker side -------------------------------------------------------------------------------

    def finish(self) -> list[Event]:
        """Close the open utterance (end of segment): its Final, if it has text."""
        utterance = self.merger.finish()
        return [self._final(utterance)] if utterance is not None else []

    def start_segment(self, generation: int, origin: int) -> None:
        """Segment ``generation`` starts at sample ``origin``: windows of older segments are stale."""
        self.merger.start_segment(origin)
        self.generation = generation

    def is_stale(self, window: Window) -> bool:
        """Is ``window`` audio of a segment the overload policy dropped?"""
        return window.generation < self.generation

    def window(self, window: Window, log_probs: np.ndarray | None) -> list[Event]:
        """Merge one window's model output, (frames, vocab) or None (gated or empty: all blank)."""
        events: list[Event] = []
        merger = self.merger
        if window.generation != self.generation:
            events.extend(self.finish())
            self.start_segment(window.generation, window.origin)
        if self._next_decoding is not None and merger.utt_first_frame is None:
            self._adopt_decoding()  # an utterance starting in this window gets them
        owned = (
            None if log_probs is None else log_probs[window.owned_offset : window.owned_offset + window.owned]
        )
        for utterance in merger.push(owned, window.first_frame, window.owned):
            events.append(self._final(utterance))
        if window.final:
            events.extend(self.finish())
            if window.eos:
                events.append(EndOfStream(self.stream_id))
        elif log_probs is not None and self.partials:
            lookahead = log_probs[window.owned_offset + window.owned :]
            committed, tentative, start = merger.partial(lookahead)
            if self.decoding.grammar is not None:
                committed, tentative = "", self._grammar_partial(self.decoding.grammar, lookahead)
            if committed or tentative:
                end = round(window.end / MODEL_SAMPLE_RATE, 3)
                events.append(Partial(self.stream_id, committed, tentative, start, end))
        return events

    def _final(self, utterance: Utterance) -> Final:
        final = self.finals.decode(self.stream_id, utterance, self.decoding, self.words)
        self._grammar_search = None
        self._adopt_decoding()
        return final

    def _adopt_decoding(self) -> None:
        """Between utterances: switch to the options sent by `configure` once the audio merged so far
        reaches the point where they were sent."""
        with self._options_lock:
            pending = self._next_decoding
            if pending is None:
                return
            merger = self.merger
            merged_to = round(merger.time_offset * MODEL_SAMPLE_RATE) + merger.next_frame * self.stride
            if merged_to < pending[0]:
                return
            self._next_decoding = None
        self.decoding = decoding = pending[1]
        self._grammar_search = None
        merger.keep_log_probs = self.finals.keeps_frames(decoding)
        merger.close_gate = self._phrase_may_end if decoding.grammar is not None else None
        builder = merger.utterance
        builder.lead_frames = 0 if decoding.grammar is None else round(GRAMMAR_LEAD_S / builder.frame_seconds)

    def _open_search(self, grammar: Grammar, end_frame: int | None = None) -> GrammarSearch | None:
        """The incremental grammar search of the open utterance, fed its frames up to ``end_frame``
        (segment frame; None: all merged), or None when no utterance is open."""
        opened = self.merger.open_frames()
        if opened is None:
            return None
        first, frames = opened
        if self._grammar_search is None or self._grammar_search[0] != first:
            self._grammar_search = (first, grammar.search())
        search = self._grammar_search[1]
        upto = len(frames) if end_frame is None else max(end_frame - first, 0)
        if upto > search.frames:
            search.advance(frames[search.frames : upto])
        return search

    def _phrase_may_end(self, end_frame: int) -> bool:
        """Endpointing under a grammar: a pause inside a phrase does not end the utterance. It ends when
        the best reading so far is a whole phrase, or nothing, or fits no phrase (garbage beats it)."""
        grammar = self.decoding.grammar
        search = None if grammar is None else self._open_search(grammar, end_frame)
        return search is None or search.may_end()

    def _grammar_partial(self, grammar: Grammar, lookahead: np.ndarray) -> str:
        """The best prefix of the grammar over the open utterance's frames and the look-ahead, searched
        incrementally (the frames merged so far are fed once; the look-ahead goes to a copy)."""
        search = self._open_search(grammar)
        if search is None:
            return ""
        ahead = search.copy()
        ahead.advance(lookahead)
        return ahead.best_prefix()
