"""The model as the scheduler sees it: batches of normalized windows in, CTC log-probabilities out.

:class:`ModelBackend` is the interface; :func:`backend_for` picks the adapter for a loaded model by its
class. Every adapter runs whole windows. Conformer adapters can also split the forward at the feature
encoder, so the engine's cached-feature path runs the convolutional front end on new samples only and
the encoder on cached frames (the same modules, in the same order, as the model's own ``forward``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "float16", "bfloat16")


class ModelBackend(Protocol):
    """Batch of equal-length normalized windows -> CTC log-probabilities, as float32 numpy."""

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def can_split(self) -> bool:
        """Can :meth:`features` and :meth:`encode` run the forward in two halves?"""
        ...

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(B, samples) float32 -> (B, frames, vocab) log-probabilities."""
        ...

    def features(self, batch: np.ndarray) -> torch.Tensor:
        """(B, samples) -> feature-encoder output (B, frames, channels) on the model's device."""
        ...

    def encode(self, features: torch.Tensor) -> np.ndarray:
        """Features (B, frames, channels) -> (B, frames, vocab) log-probabilities."""
        ...


class CtcBackend:
    """Any CTC model whose ``model(input_values).logits`` are (B, frames, vocab); whole windows only."""

    def __init__(self, model: Any, device: str = "cpu", dtype: str = "float32") -> None:
        import torch

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.device = torch.device(device)
        self._dtype: torch.dtype = getattr(torch, dtype)
        if self._dtype == torch.float16 and self.device.type != "cuda":
            raise ValueError(f"dtype {dtype} needs a CUDA device (got {device}); use bfloat16 on CPU")
        self.model = model.eval()

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def can_split(self) -> bool:
        return False

    def _tensor(self, batch: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, self._dtype)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.model(self._tensor(batch)).logits
            return logits.float().log_softmax(-1).cpu().numpy()

    def features(self, batch: np.ndarray) -> torch.Tensor:
        raise NotImplementedError(f"{type(self.model).__name__} cannot split its forward")

    def encode(self, features: torch.Tensor) -> np.ndarray:
        raise NotImplementedError(f"{type(self.model).__name__} cannot split its forward")


class ConformerBackend(CtcBackend):
    """``model.Wav2Vec2ConformerForCTC``: its feature encoder returns (B, frames, channels)."""

    @property
    def can_split(self) -> bool:
        return True

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.wav2vec2_conformer.feature_extractor(x)

    def features(self, batch: np.ndarray) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            return self._features(self._tensor(batch))

    def encode(self, features: torch.Tensor) -> np.ndarray:
        import torch

        inner = self.model.wav2vec2_conformer
        with torch.inference_mode():
            hidden, _ = inner.feature_projection(features)
            hidden = inner.encoder(hidden).last_hidden_state
            if inner.adapter is not None:
                hidden = inner.adapter(hidden)
            logits = self.model.lm_head(hidden)
            return logits.float().log_softmax(-1).cpu().numpy()


class TransformersConformerBackend(ConformerBackend):
    """``transformers.Wav2Vec2ConformerForCTC``: its feature encoder returns (B, channels, frames)."""

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return super()._features(x).transpose(1, 2)


def backend_for(model: Any, device: str = "cpu", dtype: str = "float32") -> ModelBackend:
    """The adapter for ``model``, chosen by its class."""
    from model import Wav2Vec2ConformerForCTC

    if isinstance(model, Wav2Vec2ConformerForCTC):
        return ConformerBackend(model, device, dtype)
    transformers = sys.modules.get("transformers")  # only a model built by it can be one of its classes
    if transformers is not None and isinstance(model, transformers.Wav2Vec2ConformerForCTC):
        return TransformersConformerBackend(model, device, dtype)
    return CtcBackend(model, device, dtype)
