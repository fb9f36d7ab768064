"""Readable finals: the punctuation and casing model (``model.punctuation``) applied to events.

Finals only: partials stay raw so their latency does not move. A formatted final keeps one entry per
word in ``words``, in the same order and with the same timings; each entry's ``word`` becomes its
display form (``"arrived,"``), so that joining the words with spaces gives ``text``.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from streamer.events import Final

if TYPE_CHECKING:  # torch is imported only where a model is loaded
    from model.punctuation import Punctuator

FORMATS = ("raw", "readable")

_lock = threading.Lock()
_loaded: dict[Path, Punctuator] = {}


def check_format(value: object, what: str = "format") -> str:
    if not isinstance(value, str) or value not in FORMATS:
        raise ValueError(f"{what} must be one of {', '.join(FORMATS)}, got {value!r}")
    return value


def load_punctuator(path: str | Path | None = None) -> Punctuator:
    """The model in ``path`` (default: the embedded ``model/pretrained/punct-en``), loaded once per process."""
    from model.punctuation import DEFAULT_DIR, Punctuator

    key = Path(path or DEFAULT_DIR).resolve()
    with _lock:
        if key not in _loaded:
            _loaded[key] = Punctuator.load(key)
        return _loaded[key]


def format_words(punctuator: Punctuator, words: list[str]) -> list[str]:
    from model.punctuation import strip_format

    tokens = punctuator.format_words(words)
    # the structural promise, checked on every final: only case and trailing marks differ
    assert [strip_format(t) for t in tokens] == [w.lower() for w in words], "punctuation changed a word"
    return tokens


def format_final(final: Final, punctuator: Punctuator) -> Final:
    """``final`` with readable ``text`` and word entries (same words, same timings)."""
    words = final.text.split()
    if not words:
        return final
    tokens = format_words(punctuator, words)
    entries = final.words
    if entries and [w.word.lower() for w in entries] == [w.lower() for w in words]:
        entries = tuple(dataclasses.replace(w, word=t) for w, t in zip(entries, tokens, strict=True))
    elif entries:  # words that do not spell the text (not produced by the engine): format them alone
        own = format_words(punctuator, [w.word for w in entries])
        entries = tuple(dataclasses.replace(w, word=t) for w, t in zip(entries, own, strict=True))
    return dataclasses.replace(final, text=" ".join(tokens), words=entries)
