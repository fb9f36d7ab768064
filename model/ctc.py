"""Greedy CTC collapse (arg-max labels per frame -> emitted labels, merging repeats and dropping blanks) and
the beam search defaults.

One collapse for the trainer's monitor, the offline greedy decoder and the streaming merger, so that
all three read the same text out of the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# Beam search defaults (the daemon, transcribe and evaluate all start from these). Chosen on the development
# set, never on the evaluation sets; the grids behind them are in docs/RESULTS.md ("Beam search weights").
LM_WEIGHT = 0.4  # the word LM's weight (pyctcdecode's alpha)
WORD_SCORE = 2.0  # bonus per word (pyctcdecode's beta)
BEAM_WIDTH = 32  # beams kept: wider costs CPU for little WER; 32 stays cheap beside the model
# A word the LM does not know costs this (pyctcdecode's unk_score_offset, on the log10 LM scale), so the
# search keeps to the LM's words unless the audio insists.
UNKNOWN_WORD_SCORE = -20.0
# A word is dropped unless its letter confidence (mean posterior of the frames inside it where a letter is
# the most likely label) reaches this, so a run of unsure frames (noise) does not become a word.
MIN_WORD_CONFIDENCE = 0.4


class CtcRun(NamedTuple):
    """One emitted label and the frames it spans (``first`` to ``last``, inclusive)."""

    label: int
    first: int
    last: int


def ctc_runs(ids: np.ndarray | Sequence[int], blank_id: int, prev: int | None = None) -> list[CtcRun]:
    """The runs of equal non-blank labels in a frame sequence, in order.

    ``prev`` is the label of the frame before the first one (a seam carry): a run that continues it was
    already emitted and is left out.
    """
    runs: list[CtcRun] = []
    last = blank_id if prev is None else prev
    for frame, i in enumerate(np.asarray(ids).tolist()):
        if i == last:
            if i != blank_id and runs:  # with no run yet, a repeat continues the carried label
                runs[-1] = runs[-1]._replace(last=frame)
            continue
        if i != blank_id:
            runs.append(CtcRun(i, frame, frame))
        last = i
    return runs


def collapse_with_frames(
    ids: np.ndarray | Sequence[int], blank_id: int, prev: int | None = None
) -> list[tuple[int, int]]:
    """CTC collapse as (label, index of the frame first emitting it) pairs (``prev``: label before frame 0)."""
    return [(run.label, run.first) for run in ctc_runs(ids, blank_id, prev)]


def greedy_collapse(ids: np.ndarray | Sequence[int], blank_id: int, prev: int | None = None) -> list[int]:
    """The labels greedy CTC decoding emits for a frame sequence (``prev``: label before frame 0)."""
    return [run.label for run in ctc_runs(ids, blank_id, prev)]
