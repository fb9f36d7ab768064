"""One object that prepares audio for the model and turns its output ids back into text.

A model directory carries both halves (``preprocessor_config.json`` and ``vocab.json``); keeping them
together means callers cannot pair a checkpoint with the wrong vocabulary or normalization.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from model.feature_extraction import BatchFeature, Wav2Vec2FeatureExtractor
from model.tokenizer import Wav2Vec2CTCTokenizer, Wav2Vec2CTCTokenizerOutput, seconds_per_frame


class Wav2Vec2Processor:
    """Feature extractor + CTC tokenizer of one model."""

    def __init__(self, feature_extractor: Wav2Vec2FeatureExtractor, tokenizer: Wav2Vec2CTCTokenizer) -> None:
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> Wav2Vec2Processor:
        return cls(
            Wav2Vec2FeatureExtractor.from_pretrained(directory),
            Wav2Vec2CTCTokenizer.from_pretrained(directory),
        )

    def save_pretrained(self, directory: str | os.PathLike[str]) -> list[Path]:
        return [self.feature_extractor.save_pretrained(directory), *self.tokenizer.save_pretrained(directory)]

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    def frame_seconds(self, inputs_to_logits_ratio: int = 320) -> float:
        """Seconds per model output frame, for turning decode offsets into times."""
        return seconds_per_frame(inputs_to_logits_ratio, self.sampling_rate)

    def __call__(self, audio: Any = None, text: Any = None, **kwargs: Any) -> BatchFeature:
        """Audio -> ``input_values`` (+ mask); text -> ``input_ids``; both -> audio inputs plus ``labels``.

        Keyword arguments go to whichever half accepts them (``sampling_rate`` and the padding options
        to the feature extractor; ``padding`` and ``return_tensors`` to both). Label rows are padded
        with the blank id; a trainer usually replaces those by -100 before the CTC loss.
        """
        if audio is None and text is None:
            raise ValueError("give audio, text or both")
        audio_options = {k: v for k, v in kwargs.items() if k in _FEATURE_OPTIONS}
        text_options = {"padding": True} | {k: v for k, v in kwargs.items() if k in _TEXT_OPTIONS}
        unknown = set(kwargs) - _FEATURE_OPTIONS - _TEXT_OPTIONS
        if unknown:
            raise TypeError(f"unexpected arguments: {sorted(unknown)}")
        inputs = self.feature_extractor(audio, **audio_options) if audio is not None else None
        encodings = self.tokenizer(text, **text_options) if text is not None else None
        if inputs is None:
            return encodings  # type: ignore[return-value]
        if encodings is not None:
            inputs["labels"] = encodings["input_ids"]
        return inputs

    def decode(self, token_ids: Any, **kwargs: Any) -> str | Wav2Vec2CTCTokenizerOutput:
        return self.tokenizer.decode(token_ids, **kwargs)

    def batch_decode(self, sequences: Any, **kwargs: Any) -> list[str] | Wav2Vec2CTCTokenizerOutput:
        return self.tokenizer.batch_decode(sequences, **kwargs)


_FEATURE_OPTIONS = frozenset(
    {
        "sampling_rate",
        "padding",
        "max_length",
        "truncation",
        "pad_to_multiple_of",
        "return_attention_mask",
        "return_tensors",
    }
)
_TEXT_OPTIONS = frozenset({"padding", "return_tensors"})
