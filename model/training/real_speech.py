"""Real human speech for training (``/work/shared/train/real``), split into training and development.

The folder holds Kathleen (CC0, one US voice reading the CMU ARCTIC prompts, some twice), LJ Speech clips
(public domain) and AN4 command words (33 speakers, BSD-style licence); ``transcripts.tsv`` lists them as
the sources wrote them. Here they are normalized to the model vocabulary with the same
:func:`text.normalize` as the synthetic text, and any transcript that overlaps an evaluation sentence is
dropped (:class:`text.EvalFilter`), so the real evaluation set stays unseen.

A fixed set of prompts is held back as part of the development set (checkpoint selection, decoder
tuning): chosen by a hash of the normalized prompt (every reading of a held-back Kathleen prompt is held
back with it), by clip for LJ Speech and by speaker for AN4. The choice depends on nothing but the data,
so it is the same on every machine and every run.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from model.training.text import EvalFilter, evaluation_sentences, join_split_compounds, normalize

REAL_TRAIN_DIR = Path("/work/shared/train/real")
# held back per corpus for the development set, out of 1000 hash buckets
DEV_PER_MILLE = {"kathleen": 55, "ljspeech": 110, "an4": 150}


@dataclass(frozen=True)
class RealUtterance:
    path: str
    text: str  # normalized, in today's spelling (the training target)
    duration: float
    corpus: str
    speaker: str

    @property
    def voice(self) -> str:
        return f"real:{self.speaker}"

    def record(self) -> dict:
        """The trainer's record layout (as in the synthetic manifests)."""
        return {
            "path": self.path,
            "text": self.text,
            "duration": self.duration,
            "engine": "real",
            "voice": self.voice,
            "real": True,
        }


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") % 1000


def is_dev(utt: RealUtterance) -> bool:
    """Held back for development: by prompt (Kathleen), clip (LJ Speech) or speaker (AN4)."""
    key = {"kathleen": utt.text, "an4": utt.speaker}.get(utt.corpus, Path(utt.path).stem)
    return _bucket(f"{utt.corpus}/{key}") < DEV_PER_MILLE.get(utt.corpus, 0)


def read_real_speech(
    directory: Path = REAL_TRAIN_DIR, eval_filter: EvalFilter | None = None
) -> list[RealUtterance]:
    """Every usable utterance of ``directory/transcripts.tsv``, normalized, evaluation overlaps dropped."""
    tsv = directory / "transcripts.tsv"
    if not tsv.exists():
        return []
    guard = eval_filter or EvalFilter(evaluation_sentences())
    out = []
    with tsv.open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            text = join_split_compounds(normalize(row["transcript"]))
            if not text or guard.overlaps(text):
                continue
            out.append(
                RealUtterance(
                    str(directory / row["path"]),
                    text,
                    float(row["duration_s"]),
                    row["corpus"],
                    row["speaker"],
                )
            )
    return out


def split_real(utterances: list[RealUtterance]) -> tuple[list[RealUtterance], list[RealUtterance]]:
    """(training, development)."""
    train = [u for u in utterances if not is_dev(u)]
    dev = [u for u in utterances if is_dev(u)]
    return train, dev
