"""Raw waveform -> model input: padding, attention mask and per-utterance normalization.

Wav2Vec2 models take the waveform itself as input, so "feature extraction" is only batching plus the
zero-mean unit-variance normalization the checkpoint was trained with. The numbers must match the
Hugging Face implementation bit for bit (same epsilon, same float32 arithmetic): checkpoints fine-tuned
there are sensitive to even small shifts in input scale.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
# Added to the variance before the square root; the value the published checkpoints were trained with.
NORMALIZATION_EPSILON = 1e-7

PaddingArg = bool | str


def normalize_waveform(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance: what a Wav2Vec2 checkpoint expects of a whole utterance."""
    return (wave - wave.mean()) / np.sqrt(wave.var() + NORMALIZATION_EPSILON)


class BatchFeature(dict):
    """Model inputs by name (``input_values``, ``attention_mask``, ...), also readable as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any = None, dtype: Any = None) -> BatchFeature:
        """Move torch tensors to ``device``; ``dtype`` casts floating-point ones only (masks stay integer)."""
        import torch

        moved = BatchFeature()
        for name, value in self.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device, dtype if value.is_floating_point() else None)
            moved[name] = value
        return moved


def convert_to_tensors(arrays: list[np.ndarray], return_tensors: str | None) -> Any:
    """Stack equal-length rows into one ``np`` or ``pt`` tensor; ``None`` keeps a list of arrays."""
    if return_tensors is None:
        return arrays
    if len({row.shape for row in arrays}) > 1:
        raise ValueError(
            f"cannot make one tensor from rows of different lengths {[len(r) for r in arrays]}; pass padding=True"
        )
    stacked = np.stack(arrays) if arrays else np.zeros((0, 0), dtype=np.float32)
    if return_tensors == "np":
        return stacked
    if return_tensors == "pt":
        import torch

        return torch.from_numpy(stacked)
    raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")


class Wav2Vec2FeatureExtractor:
    """Turns one or more 1-D waveforms into a padded, normalized batch for a Wav2Vec2(-Conformer) model.

    ``return_attention_mask`` defaults to the config value because it is a property of the checkpoint:
    models with group-norm feature encoders were trained on zero padding without a mask, and for them
    the padding is normalized together with the speech, exactly as at training time.
    """

    model_input_names = ("input_values", "attention_mask")

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16_000,
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        do_normalize: bool = True,
        padding_side: str = "right",
        **unused_config: Any,
    ) -> None:
        if feature_size != 1:
            raise ValueError(f"only raw mono waveforms are supported (feature_size=1), got {feature_size}")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.feature_size = feature_size
        self.sampling_rate = sampling_rate
        self.padding_value = padding_value
        self.return_attention_mask = return_attention_mask
        self.do_normalize = do_normalize
        self.padding_side = padding_side

    # -- persistence -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "do_normalize": self.do_normalize,
            "feature_extractor_type": type(self).__name__,
            "feature_size": self.feature_size,
            "padding_side": self.padding_side,
            "padding_value": self.padding_value,
            "return_attention_mask": self.return_attention_mask,
            "sampling_rate": self.sampling_rate,
        }

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> Wav2Vec2FeatureExtractor:
        """Load from a model directory holding ``preprocessor_config.json`` (Hugging Face layout)."""
        config_path = Path(directory) / PREPROCESSOR_CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"no {PREPROCESSOR_CONFIG_NAME} in {directory}")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config.pop("feature_extractor_type", None)
        config.pop("processor_class", None)
        return cls(**config)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PREPROCESSOR_CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"

    # -- featurization -----------------------------------------------------------------------------

    def __call__(
        self,
        raw_speech: np.ndarray | Sequence[float] | Sequence[np.ndarray] | Sequence[Sequence[float]],
        sampling_rate: int | None = None,
        padding: PaddingArg = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Pad and normalize a waveform or a batch of waveforms; the result is always batched.

        ``padding``: ``True``/``"longest"`` pads to the longest item, ``"max_length"`` to ``max_length``,
        ``False``/``"do_not_pad"`` leaves lengths alone (only usable with ``return_tensors=None``).
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"this model expects audio sampled at {self.sampling_rate} Hz, got {sampling_rate} Hz; "
                "resample first (model.audio.resample)"
            )
        waveforms = self._as_batch(raw_speech)
        strategy = _padding_strategy(padding, max_length)
        with_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask

        if truncation:
            if max_length is None:
                raise ValueError("truncation=True needs max_length")
            limit = _round_up(max_length, pad_to_multiple_of)
            waveforms = [w[:limit] for w in waveforms]

        target_length: int | None = None
        if strategy == "longest":
            target_length = max((len(w) for w in waveforms), default=0)
        elif strategy == "max_length":
            target_length = max_length
        if target_length is not None:
            target_length = _round_up(target_length, pad_to_multiple_of)

        rows: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        for waveform in waveforms:
            padded, mask = self._pad(waveform, target_length)
            rows.append(padded)
            masks.append(mask)

        if self.do_normalize:
            # Without a mask the model cannot tell padding from signal, so (as in the reference
            # implementation) the padded row is normalized as a whole.
            honour_mask = with_mask and strategy != "do_not_pad"
            rows = [
                self._normalize(row, mask if honour_mask else None)
                for row, mask in zip(rows, masks, strict=True)
            ]

        features = BatchFeature(input_values=convert_to_tensors(rows, return_tensors))
        if with_mask:
            features["attention_mask"] = convert_to_tensors(masks, return_tensors)
        return features

    @staticmethod
    def _as_batch(raw_speech: Any) -> list[np.ndarray]:
        """Accept one waveform or many (arrays, tensors or lists) and return float32 1-D arrays."""
        if isinstance(raw_speech, list | tuple):
            first = raw_speech[0] if raw_speech else None
            is_batch = isinstance(first, list | tuple) or getattr(first, "ndim", 0) >= 1
            batch = list(raw_speech) if is_batch else [raw_speech]
        else:
            array = np.asarray(raw_speech)  # numpy array or CPU tensor
            if array.ndim > 2:
                raise ValueError(
                    f"expected mono audio (1-D, or 2-D batch x samples), got shape {array.shape}"
                )
            batch = list(array) if array.ndim == 2 else [array]
        waveforms = [np.asarray(w, dtype=np.float32) for w in batch]
        for waveform in waveforms:
            if waveform.ndim != 1:
                raise ValueError(f"each waveform must be 1-D mono audio, got shape {waveform.shape}")
        return waveforms

    def _pad(self, waveform: np.ndarray, target_length: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Pad one waveform to ``target_length`` (if longer already, leave it) and build its mask."""
        mask = np.ones(len(waveform), dtype=np.int32)
        missing = 0 if target_length is None else target_length - len(waveform)
        if missing <= 0:
            return waveform, mask
        widths = (0, missing) if self.padding_side == "right" else (missing, 0)
        padded = np.pad(waveform, widths, mode="constant", constant_values=self.padding_value)
        return padded.astype(np.float32, copy=False), np.pad(mask, widths)

    def _normalize(self, row: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Zero mean, unit variance over the valid samples; padding is then reset to ``padding_value``.

        Statistics over the valid samples only keep an utterance's values independent of what else
        is in its batch.
        """
        if mask is None or mask.all():
            return normalize_waveform(row)
        is_speech = mask.astype(bool)
        speech = row[is_speech]
        normalized = (row - speech.mean()) / np.sqrt(speech.var() + NORMALIZATION_EPSILON)
        normalized[~is_speech] = self.padding_value
        return normalized


def _padding_strategy(padding: PaddingArg, max_length: int | None) -> str:
    """Map the user's ``padding`` argument to ``"longest"``, ``"max_length"`` or ``"do_not_pad"``."""
    if padding is True:
        strategy = "longest"
    elif padding is False:
        strategy = "do_not_pad"
    elif padding in ("longest", "max_length", "do_not_pad"):
        strategy = str(padding)
    else:
        raise ValueError(
            f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}"
        )
    if strategy == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length")
    return strategy


def _round_up(length: int, multiple: int | None) -> int:
    if not multiple:
        return length
    return -(-length // multiple) * multiple
