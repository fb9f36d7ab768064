"""Transcript events: what the streaming engine emits and every transport forwards.

These are the only objects that cross from the recognition engine (``streamer.engine``) to the
transports (websocket server, vosk endpoint, terminal and file clients). Times are seconds from the
start of the stream.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float  # 0..1, mean posterior of the word's emitting frames


@dataclass(frozen=True)
class Partial:
    """The open utterance so far: ``committed`` will not change; ``tentative`` (look-ahead) may."""

    stream_id: str
    committed: str
    tentative: str
    start: float  # utterance start
    end: float  # audio covered so far
    type: str = field(default="partial", init=False)

    @property
    def text(self) -> str:
        return " ".join(t for t in (self.committed, self.tentative) if t)


@dataclass(frozen=True)
class Alternative:
    """One of the n best readings of an utterance (``max_alternatives``), best first."""

    text: str
    confidence: float  # posterior among the alternatives (and the out-of-grammar reading)
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Final:
    """A finished utterance; never revised."""

    stream_id: str
    text: str
    words: tuple[Word, ...]
    start: float
    end: float
    type: str = field(default="final", init=False)
    alternatives: tuple[Alternative, ...] = ()  # only when the stream asked for them


@dataclass(frozen=True)
class StreamError:
    """The stream hit a problem it cannot continue past (or a recoverable one, when ``fatal`` is False)."""

    stream_id: str
    code: str  # machine-readable, e.g. "bad_audio", "overload", "internal"
    message: str
    fatal: bool = True
    type: str = field(default="error", init=False)


@dataclass(frozen=True)
class EndOfStream:
    """Sent once after the last Final of a stream that was ended; nothing follows it."""

    stream_id: str
    type: str = field(default="end", init=False)


Event = Partial | Final | StreamError | EndOfStream


def to_dict(event: Event) -> dict[str, Any]:
    return asdict(event)
