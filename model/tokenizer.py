"""Character vocabulary of a CTC model: text -> label ids for training, frame ids -> text for decoding.

Decoding follows the Hugging Face ``Wav2Vec2CTCTokenizer`` exactly (including its quirks, e.g. that
``skip_special_tokens`` drops specials *before* repeats are merged), because evaluation numbers and
word timings must not change when a checkpoint moves between the two implementations. Offsets are in
model frames (one frame = ``inputs_to_logits_ratio`` samples, 20 ms for 16 kHz Wav2Vec2);
``offsets_to_seconds`` converts them.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.feature_extraction import BatchFeature, convert_to_tensors

VOCAB_FILE_NAME = "vocab.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"
# Wav2Vec2's convolutional encoder emits one frame per 320 samples: 20 ms at 16 kHz.
DEFAULT_INPUTS_TO_LOGITS_RATIO = 320
DEFAULT_SAMPLING_RATE = 16_000

Offsets = list[dict[str, Any]]


@dataclass
class Wav2Vec2CTCTokenizerOutput:
    """Decoded text with optional character/word frame offsets (lists of them after ``batch_decode``)."""

    text: str | list[str]
    char_offsets: Offsets | list[Offsets] | None = None
    word_offsets: Offsets | list[Offsets] | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def seconds_per_frame(
    inputs_to_logits_ratio: int = DEFAULT_INPUTS_TO_LOGITS_RATIO, sampling_rate: int = DEFAULT_SAMPLING_RATE
) -> float:
    """Duration of one model output frame in seconds (0.02 for Wav2Vec2 at 16 kHz)."""
    return inputs_to_logits_ratio / sampling_rate


def offsets_to_seconds(offsets: Iterable[Mapping[str, Any]], frame_seconds: float = 0.02) -> Offsets:
    """Copy char or word offsets, replacing frame indices by ``start``/``end`` times in seconds."""
    timed = []
    for offset in offsets:
        entry = {k: v for k, v in offset.items() if k not in ("start_offset", "end_offset")}
        entry["start"] = round(int(offset["start_offset"]) * frame_seconds, 6)
        entry["end"] = round(int(offset["end_offset"]) * frame_seconds, 6)
        timed.append(entry)
    return timed


def _token_name(value: Any) -> str | None:
    """Special tokens are saved either as plain strings or as ``{"content": ...}`` objects."""
    if isinstance(value, Mapping):
        return value.get("content")
    return value


def _as_id_list(ids: Any) -> list[int]:
    """Accept a list, numpy array, torch tensor or single id."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


class Wav2Vec2CTCTokenizer:
    """Character-level CTC vocabulary with a blank (the pad token) and a word delimiter (``|``).

    Special tokens missing from the vocabulary (often ``<s>``/``</s>``) are simply absent here: a CTC
    head can never emit an id outside its vocabulary, so there is nothing to decode them from.
    """

    def __init__(
        self,
        vocab: Mapping[str, int] | str | os.PathLike[str],
        bos_token: str | None = "<s>",
        eos_token: str | None = "</s>",
        unk_token: str | None = "<unk>",
        pad_token: str | None = "<pad>",
        word_delimiter_token: str | None = "|",
        replace_word_delimiter_char: str = " ",
        do_lower_case: bool = False,
        target_lang: str | None = None,
    ) -> None:
        if not isinstance(vocab, Mapping):
            vocab = json.loads(Path(vocab).read_text(encoding="utf-8"))
        self.full_vocab: dict[str, Any] = dict(vocab)
        self.target_lang = target_lang
        if target_lang is not None:
            vocab = vocab[target_lang]  # multilingual vocab: {language: {token: id}}
        self.vocab: dict[str, int] = {token: int(i) for token, i in vocab.items()}
        self.ids_to_tokens: dict[int, str] = {i: token for token, i in self.vocab.items()}

        def present(token: str | None) -> str | None:
            return token if token in self.vocab else None

        self.bos_token = present(bos_token)
        self.eos_token = present(eos_token)
        self.unk_token = present(unk_token)
        self.pad_token = present(pad_token)
        self.word_delimiter_token = present(word_delimiter_token)
        if self.pad_token is None:
            raise ValueError(f"the pad token {pad_token!r} (the CTC blank) must be in the vocabulary")
        self.replace_word_delimiter_char = replace_word_delimiter_char
        self.do_lower_case = do_lower_case
        # Multi-character tokens (``<unk>``, ...) are matched whole in text, longest first.
        self._multi_char_tokens = sorted((t for t in self.vocab if len(t) > 1), key=len, reverse=True)

    # -- vocabulary ----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.vocab[token]

    @property
    def pad_token_id(self) -> int:
        return self.vocab[self.pad_token]  # type: ignore[index]

    @property
    def blank_id(self) -> int:
        """The CTC blank is the pad token."""
        return self.pad_token_id

    @property
    def unk_token_id(self) -> int | None:
        return self._id(self.unk_token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def word_delimiter_token_id(self) -> int | None:
        return self._id(self.word_delimiter_token)

    @property
    def all_special_tokens(self) -> list[str]:
        candidates = (
            self.bos_token,
            self.eos_token,
            self.unk_token,
            self.pad_token,
            self.word_delimiter_token,
        )
        return [t for t in candidates if t is not None]

    @property
    def all_special_ids(self) -> list[int]:
        return [self.vocab[t] for t in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def _token_to_id(self, token: str) -> int:
        if token in self.vocab:
            return self.vocab[token]
        if self.unk_token is None:
            raise KeyError(f"{token!r} is not in the vocabulary and there is no unknown token")
        return self.vocab[self.unk_token]

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> str | list[str]:
        """Ids outside the vocabulary become the unknown token."""
        if isinstance(ids, int | np.integer):
            return self.ids_to_tokens.get(int(ids), self.unk_token or "")
        special_ids = set(self.all_special_ids) if skip_special_tokens else set()
        return [
            self.ids_to_tokens.get(i, self.unk_token or "") for i in _as_id_list(ids) if i not in special_ids
        ]

    # -- encoding (labels) ---------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """Split text into vocabulary characters; spaces become the word delimiter.

        Multi-character vocabulary entries written in the text (``<unk>``) stay whole and swallow the
        whitespace around them. With ``do_lower_case`` the (upper-case) vocabulary accepts any case.
        """
        tokens: list[str] = []
        pending = ""  # plain text since the last whole token
        strip_next = False
        position = 0
        while position < len(text):
            whole = next((t for t in self._multi_char_tokens if text.startswith(t, position)), None)
            if whole is None:
                pending += text[position]
                position += 1
                continue
            tokens += self._split_characters(pending.lstrip() if strip_next else pending, rstrip=True)
            tokens.append(whole)
            pending, strip_next = "", True
            position += len(whole)
        tokens += self._split_characters(pending.lstrip() if strip_next else pending, rstrip=False)
        return tokens

    def _split_characters(self, text: str, rstrip: bool) -> list[str]:
        if rstrip:
            text = text.rstrip()
        if self.do_lower_case:
            text = text.upper()
        if self.word_delimiter_token is not None:
            text = text.replace(" ", self.word_delimiter_token)
        return list(text)

    def encode(self, text: str) -> list[int]:
        """Label ids for one transcript."""
        return self.convert_tokens_to_ids(self.tokenize(text))  # type: ignore[return-value]

    def __call__(
        self,
        text: str | Sequence[str],
        padding: bool | str = False,
        return_attention_mask: bool = True,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Encode one transcript or a batch; ``padding=True`` pads a batch with the pad id.

        With ``return_tensors`` the result is always 2-D (batch x tokens), as models expect.
        """
        single = isinstance(text, str)
        rows = [self.encode(t) for t in ([text] if single else text)]
        masks = [[1] * len(r) for r in rows]
        if padding not in (False, "do_not_pad"):
            longest = max((len(r) for r in rows), default=0)
            rows = [r + [self.pad_token_id] * (longest - len(r)) for r in rows]
            masks = [m + [0] * (longest - len(m)) for m in masks]
        columns: dict[str, Any] = {"input_ids": rows}
        if return_attention_mask:
            columns["attention_mask"] = masks
        if return_tensors is not None:
            return BatchFeature(
                {
                    name: convert_to_tensors([np.asarray(r, dtype=np.int64) for r in value], return_tensors)
                    for name, value in columns.items()
                }
            )
        return BatchFeature({name: value[0] if single else value for name, value in columns.items()})

    # -- decoding ------------------------------------------------------------------------------------

    def decode(
        self,
        token_ids: Any,
        skip_special_tokens: bool = False,
        output_char_offsets: bool = False,
        output_word_offsets: bool = False,
        group_tokens: bool = True,
        spaces_between_special_tokens: bool = False,
    ) -> str | Wav2Vec2CTCTokenizerOutput:
        """CTC-decode one sequence of per-frame ids (e.g. the argmax of the logits).

        Repeats are merged, blanks dropped and delimiters turned into spaces. With offsets requested,
        returns a ``Wav2Vec2CTCTokenizerOutput`` whose offsets count frames (end exclusive).
        """
        tokens = self.convert_ids_to_tokens(_as_id_list(token_ids))
        if skip_special_tokens:
            dropped = set(self.all_special_tokens) - {self.word_delimiter_token}
            tokens = [t for t in tokens if t not in dropped]
        if not tokens:
            if output_char_offsets or output_word_offsets:
                return Wav2Vec2CTCTokenizerOutput(text="", char_offsets=[], word_offsets=[])
            return ""

        if group_tokens:
            runs = [(token, len(list(group))) for token, group in itertools.groupby(tokens)]
        else:
            runs = [(token, 1) for token in tokens]

        char_offsets: Offsets = []
        frame = 0
        for token, length in runs:
            if token != self.pad_token:
                char = self.replace_word_delimiter_char if token == self.word_delimiter_token else token
                char_offsets.append({"char": char, "start_offset": frame, "end_offset": frame + length})
            frame += length

        separator = " " if spaces_between_special_tokens else ""
        text = separator.join(entry["char"] for entry in char_offsets).strip()
        if self.do_lower_case:
            text = text.lower()
        if not (output_char_offsets or output_word_offsets):
            return text
        return Wav2Vec2CTCTokenizerOutput(
            text=text,
            char_offsets=char_offsets if output_char_offsets else None,
            word_offsets=self._word_offsets(char_offsets) if output_word_offsets else None,
        )

    def _word_offsets(self, char_offsets: Offsets) -> Offsets:
        """A word is a maximal run of characters other than the delimiter character."""
        words: Offsets = []
        for is_space, group in itertools.groupby(
            char_offsets, key=lambda entry: entry["char"] == self.replace_word_delimiter_char
        ):
            if is_space:
                continue
            chars = list(group)
            words.append(
                {
                    "word": "".join(entry["char"] for entry in chars),
                    "start_offset": chars[0]["start_offset"],
                    "end_offset": chars[-1]["end_offset"],
                }
            )
        return words

    def batch_decode(
        self,
        sequences: Any,
        skip_special_tokens: bool = False,
        output_char_offsets: bool = False,
        output_word_offsets: bool = False,
        group_tokens: bool = True,
    ) -> list[str] | Wav2Vec2CTCTokenizerOutput:
        """``decode`` every row; with offsets, one output whose fields are per-row lists."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        decoded = [
            self.decode(
                row,
                skip_special_tokens=skip_special_tokens,
                output_char_offsets=output_char_offsets,
                output_word_offsets=output_word_offsets,
                group_tokens=group_tokens,
            )
            for row in sequences
        ]
        if not (output_char_offsets or output_word_offsets):
            return decoded  # type: ignore[return-value]
        return Wav2Vec2CTCTokenizerOutput(
            text=[d.text for d in decoded],  # type: ignore[union-attr]
            char_offsets=[d.char_offsets for d in decoded],  # type: ignore[union-attr]
            word_offsets=[d.word_offsets for d in decoded],  # type: ignore[union-attr]
        )

    # -- persistence ---------------------------------------------------------------------------------

    def to_config(self) -> dict[str, Any]:
        """``tokenizer_config.json`` contents, readable by Hugging Face's tokenizer as well."""
        return {
            "bos_token": self.bos_token,
            "do_lower_case": self.do_lower_case,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "replace_word_delimiter_char": self.replace_word_delimiter_char,
            "target_lang": self.target_lang,
            "tokenizer_class": "Wav2Vec2CTCTokenizer",
            "unk_token": self.unk_token,
            "word_delimiter_token": self.word_delimiter_token,
        }

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> Wav2Vec2CTCTokenizer:
        """Load ``vocab.json`` plus ``tokenizer_config.json``/``special_tokens_map.json`` if present."""
        directory = Path(directory)
        vocab_path = directory / VOCAB_FILE_NAME
        if not vocab_path.is_file():
            raise FileNotFoundError(f"no {VOCAB_FILE_NAME} in {directory}")
        settings: dict[str, Any] = {}
        for name in (TOKENIZER_CONFIG_NAME, SPECIAL_TOKENS_MAP_NAME):
            path = directory / name
            if path.is_file():
                settings.update(json.loads(path.read_text(encoding="utf-8")))
        token_keys = ("bos_token", "eos_token", "unk_token", "pad_token", "word_delimiter_token")
        arguments: dict[str, Any] = {key: _token_name(settings[key]) for key in token_keys if key in settings}
        for key in ("replace_word_delimiter_char", "do_lower_case", "target_lang"):
            if key in settings:
                arguments[key] = settings[key]
        return cls(vocab_path, **arguments)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> list[Path]:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab_path = directory / VOCAB_FILE_NAME
        config_path = directory / TOKENIZER_CONFIG_NAME
        vocab_path.write_text(
            json.dumps(self.full_vocab, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        config_path.write_text(
            json.dumps(self.to_config(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return [vocab_path, config_path]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, {self.to_config()})"
