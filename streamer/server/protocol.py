"""Parsing and validation of what clients send, and the wire formats the server writes.

Pure functions only (no I/O), so that they can be tested exhaustively (see
``tests/test_protocol_*.py``). Two dialects:

* the native protocol v1 (``docs/protocol.md``): JSON text messages with a ``type`` and binary PCM;
* the vosk-server dialect (``--vosk-port``): ``{ "config" : {...} }``, binary s16le, the byte-exact
  texts ``{"eof" : 1}`` and ``{"reset" : 1}``; replies formatted the way vosk's ``json.h`` dumps them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from websockets.frames import CloseCode

from streamer import pcm
from streamer.grammar import GrammarError, Hotword, check_hotwords, check_max_alternatives, check_phrases
from streamer.readable import FORMATS

PROTOCOL_VERSION = 1
# encoding -> bytes per sample
ENCODINGS: dict[str, int] = {name: pcm.ENCODINGS[name].itemsize for name in pcm.WIRE_ENCODINGS}

VOSK_EOF = '{"eof" : 1}'
VOSK_RESET = '{"reset" : 1}'


# error code -> close code used when the error is fatal (docs/protocol.md, "Errors")
ERROR_CLOSE_CODES: dict[str, CloseCode] = {
    "bad_json": CloseCode.INVALID_DATA,
    "bad_message": CloseCode.POLICY_VIOLATION,
    "not_started": CloseCode.POLICY_VIOLATION,
    "bad_audio": CloseCode.INVALID_DATA,
    "frame_too_large": CloseCode.MESSAGE_TOO_BIG,
    "text_too_large": CloseCode.MESSAGE_TOO_BIG,
    "flood": CloseCode.POLICY_VIOLATION,
    "start_timeout": CloseCode.POLICY_VIOLATION,
    "idle_timeout": CloseCode.POLICY_VIOLATION,
    "max_duration": CloseCode.POLICY_VIOLATION,
    "no_source": CloseCode.POLICY_VIOLATION,
    "overload": CloseCode.TRY_AGAIN_LATER,
    "server_busy": CloseCode.TRY_AGAIN_LATER,
    "unavailable": CloseCode.TRY_AGAIN_LATER,
    "shutdown": CloseCode.GOING_AWAY,
    "internal": CloseCode.INTERNAL_ERROR,
}


def close_code_for(error_code: str) -> CloseCode:
    return ERROR_CLOSE_CODES.get(error_code, CloseCode.INTERNAL_ERROR)


class ProtocolError(Exception):
    """A client mistake: reported to the client as an ``error`` event, then the connection closes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def close_code(self) -> CloseCode:
        return close_code_for(self.code)


@dataclass(frozen=True)
class DecodingRequest:
    """A client's decoding options, checked for shape only (the engine checks them against its model)."""

    grammar: tuple[str, ...] | None = None  # phrases: a hard constraint
    hotwords: tuple[Hotword, ...] = ()
    max_alternatives: int = 0


@dataclass(frozen=True)
class StartConfig:
    sample_rate: int = 16000
    encoding: str = "pcm_s16le"
    partials: bool = True
    words: bool = True
    format: str = "raw"  # finals: "raw" (as recognized) | "readable" (punctuated, true-cased)
    decoding: DecodingRequest | None = None


@dataclass(frozen=True)
class Command:
    """A parsed native text message."""

    type: str  # "start" | "reset" | "end" | "configure"
    start: StartConfig | None = None
    decoding: DecodingRequest | None = None  # "configure"


def _strict_json(text: str | bytes) -> Any:
    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=reject_constant)


def parse_sample_rate(value: Any) -> int:
    # bool is an int subclass: true must not mean 1 Hz
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("bad_message", f"sample_rate must be a number, got {value!r}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise ProtocolError("bad_message", f"sample_rate must be a whole number of Hz, got {value!r}")
    try:
        return pcm.check_sample_rate(int(value))
    except pcm.AudioFormatError as exc:
        raise ProtocolError("bad_message", str(exc)) from None


def parse_start(obj: dict[str, Any]) -> StartConfig:
    version = obj.get("version", PROTOCOL_VERSION)
    if isinstance(version, bool) or version != PROTOCOL_VERSION:
        raise ProtocolError("bad_message", f"unsupported protocol version {version!r} (server speaks 1)")
    rate = parse_sample_rate(obj.get("sample_rate", 16000))
    encoding = obj.get("encoding", "pcm_s16le")
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ProtocolError(
            "bad_message", f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}"
        )
    flags = {}
    for name in ("partials", "words"):
        value = obj.get(name, True)
        if not isinstance(value, bool):
            raise ProtocolError("bad_message", f"{name} must be true or false, got {value!r}")
        flags[name] = value
    text_format = obj.get("format", "raw")
    if text_format not in FORMATS:
        raise ProtocolError("bad_message", f"format must be one of {', '.join(FORMATS)}, got {text_format!r}")
    decoding = parse_decoding(obj) if DECODING_KEYS & obj.keys() else None
    return StartConfig(sample_rate=rate, encoding=encoding, format=text_format, decoding=decoding, **flags)


DECODING_KEYS = {"grammar", "hotwords", "max_alternatives"}


def parse_decoding(obj: dict[str, Any]) -> DecodingRequest:
    """``grammar`` (list of phrases or null), ``hotwords`` (list of ``{"phrase", "boost"}``) and
    ``max_alternatives`` of a start or configure message; absent means none."""
    try:
        grammar = obj.get("grammar")
        phrases = tuple(check_phrases(grammar)) if grammar is not None else None
        hotwords = check_hotwords(obj["hotwords"]) if obj.get("hotwords") is not None else ()
        alternatives = check_max_alternatives(obj.get("max_alternatives", 0))
    except GrammarError as exc:
        raise ProtocolError("bad_message", str(exc)) from None
    return DecodingRequest(phrases, hotwords, alternatives)


def parse_text(text: str, max_bytes: int = 65536) -> Command:
    """Parse one native text message; raise ProtocolError for anything but a valid v1 message."""
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError("text_too_large", f"text message over {max_bytes} bytes")
    try:
        obj = _strict_json(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"text message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_json", "text message must be a JSON object")
    kind = obj.get("type")
    if kind == "start":
        return Command("start", parse_start(obj))
    if kind in ("reset", "end"):
        return Command(kind)
    if kind == "configure":
        unknown = set(obj) - DECODING_KEYS - {"type"}
        if unknown:
            raise ProtocolError("bad_message", f"configure: unknown fields {sorted(unknown)[:5]}")
        return Command(kind, decoding=parse_decoding(obj))
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "message has no string 'type'")
    raise ProtocolError("bad_message", f"unknown message type {kind[:40]!r}")


def check_audio(data: bytes, encoding: str) -> np.ndarray:
    """One binary frame's samples as sent (a copy-free view), or ProtocolError ``bad_audio``
    (``streamer.pcm.check_frame``: whole samples, finite floats)."""
    try:
        return pcm.check_frame(data, encoding)
    except pcm.AudioFormatError as exc:
        raise ProtocolError("bad_audio", str(exc)) from None


# ---------------------------------------------------------------------------------------- events


def event_message(event_dict: dict[str, Any]) -> dict[str, Any]:
    """A transcript event (``streamer.events.to_dict``) as the native protocol's JSON object."""
    kind = event_dict.get("type")
    out = dict(event_dict)
    if kind == "partial":
        out["text"] = " ".join(t for t in (out.get("committed", ""), out.get("tentative", "")) if t)
    elif kind == "final":
        out["words"] = [dict(w) for w in out.get("words", ())]
        if out.get("alternatives"):
            out["alternatives"] = [
                {**a, "words": [dict(w) for w in a.get("words", ())]} for a in out["alternatives"]
            ]
        else:
            out.pop("alternatives", None)  # only streams that asked for alternatives get the field
    return out


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


# ----------------------------------------------------------------------------------------- vosk


@dataclass(frozen=True)
class VoskMessage:
    type: str  # "config" | "eof" | "reset"
    sample_rate: int | None = None
    words: bool | None = None
    phrase_list: tuple[str, ...] | None = (
        None  # given: () = none (open vocabulary), as vosk's `if phrase_list`
    )
    max_alternatives: int | None = None


def parse_vosk_text(text: str, max_bytes: int = 65536) -> VoskMessage:
    """Classify a text frame the way vosk-server's asr_server.py does.

    ``{"eof" : 1}`` and ``{"reset" : 1}`` are matched byte-exactly (as vosk does); any other text
    containing ``config`` is a configuration message ``{"config": {...}}``.
    """
    if text == VOSK_EOF:
        return VoskMessage("eof")
    if text == VOSK_RESET:
        return VoskMessage("reset")
    if len(text) > max_bytes:
        raise ProtocolError("text_too_large", f"text message over {max_bytes} bytes")
    if "config" not in text:
        raise ProtocolError("bad_message", 'expected { "config" : {...} }, {"eof" : 1} or {"reset" : 1}')
    try:
        obj = _strict_json(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"config is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("config"), dict):
        raise ProtocolError("bad_message", 'config message must be { "config" : { ... } }')
    config = obj["config"]
    rate = parse_sample_rate(config["sample_rate"]) if "sample_rate" in config else None
    words = None
    if "words" in config:
        if not isinstance(config["words"], bool | int):
            raise ProtocolError("bad_message", "config.words must be a boolean")
        words = bool(config["words"])
    phrases = None
    try:
        if "phrase_list" in config:
            given = config["phrase_list"]
            phrases = tuple(check_phrases(given, "phrase_list")) if given is not None else ()
        alternatives = (
            check_max_alternatives(config["max_alternatives"]) if "max_alternatives" in config else None
        )
    except GrammarError as exc:
        raise ProtocolError("bad_message", f"config: {exc}") from None
    return VoskMessage(
        "config", sample_rate=rate, words=words, phrase_list=phrases, max_alternatives=alternatives
    )


def _vosk_escape(text: str) -> str:
    # json.h's json_escape: only these are escaped; other characters pass through as UTF-8.
    # Other control characters (which vosk would emit raw, making invalid JSON) become \\u00XX.
    table = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(table.get(c, c if c >= " " else f"\\u{ord(c):04x}") for c in text)


def vosk_dump(value: Any, depth: int = 1) -> str:
    """Serialize like vosk-api's ``json::JSON::dump()``: sorted keys, 2-space pads, ``%f`` floats."""
    pad = "  " * depth
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        items = [f'{pad}"{_vosk_escape(key)}" : {vosk_dump(value[key], depth + 1)}' for key in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + pad[2:] + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(vosk_dump(v, depth + 1) for v in value) + "]"
    if isinstance(value, str):
        return '"' + _vosk_escape(value) + '"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:f}"
    raise TypeError(f"cannot dump {type(value).__name__}")


def vosk_partial(text: str) -> str:
    """Text on the vosk port is lower case, as vosk's English models write it."""
    return vosk_dump({"partial": text.lower()})


def _vosk_word(w: dict[str, Any], conf: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"end": float(w["end"]), "start": float(w["start"]), "word": str(w["word"]).lower()}
    if conf:
        out["conf"] = float(w.get("confidence", 1.0))
    return out


def vosk_result(finals: list[dict[str, Any]], words: bool = True, max_alternatives: int = 0) -> str:
    """One vosk result for one or more finals (merged in order); ``{"text" : ""}`` when empty.

    With ``max_alternatives``, vosk's n-best shape instead: ``{"alternatives" : [{"confidence" : ...,
    "result" : [...], "text" : ...}, ...]}`` (the words of an alternative carry no ``conf``, as in vosk);
    earlier finals merged into the same reply lead every alternative with their best text.
    """
    if max_alternatives > 0:
        return _vosk_alternatives(finals, words, max_alternatives)
    obj: dict[str, Any] = {}
    word_list = [_vosk_word(w) for final in finals for w in final.get("words", ())]
    if words and word_list:
        obj["result"] = word_list
    obj["text"] = " ".join(f.get("text", "") for f in finals if f.get("text")).lower()
    return vosk_dump(obj)


def _vosk_alternatives(finals: list[dict[str, Any]], words: bool, limit: int) -> str:
    lead = [f for f in finals[:-1] if f.get("text")]
    lead_text = [str(f["text"]) for f in lead]
    lead_words = [_vosk_word(w, conf=False) for f in lead for w in f.get("words", ())]
    last = finals[-1] if finals else {}
    options = list(last.get("alternatives", ()))[:limit] or [
        {"text": last.get("text", ""), "confidence": 1.0, "words": last.get("words", ())}
    ]
    entries = []
    for alt in options:
        entry: dict[str, Any] = {"confidence": float(alt.get("confidence", 1.0))}
        alt_words = lead_words + [_vosk_word(w, conf=False) for w in alt.get("words", ())]
        if words and alt_words:
            entry["result"] = alt_words
        entry["text"] = " ".join(t for t in [*lead_text, str(alt.get("text", ""))] if t).lower()
        entries.append(entry)
    return vosk_dump({"alternatives": entries})
