"""Position information for the Conformer encoder.

* `RelativePositionalEncoding`: sinusoids for relative distances (Transformer-XL style), consumed by the
  attention as an additive score bias.
* `RotaryPositionalEmbedding`: cos/sin tables rotating queries and keys.
* `PositionalConvEmbedding`: the weight-normalised grouped convolution of Wav2Vec2. The Conformer encoder
  does not use it in its forward pass, but checkpoints carry its weights, so it exists to keep state
  dicts identical (and it handles both serialised forms of weight normalisation).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from model.activations import get_activation
from model.configuration import Wav2Vec2ConformerConfig


class RelativePositionalEncoding(nn.Module):
    """Sinusoidal table of relative distances +(L-1) ... 0 ... -(L-1).

    Row `k` of the slice returned for a sequence of length T encodes the distance `T - 1 - k`
    (query index minus key index), i.e. the table runs from "key far to the left" to "key far to the
    right". The table is a non-persistent buffer, rebuilt when longer inputs arrive.
    """

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        self.d_model = config.hidden_size
        self.register_buffer("pe", self._build(config.max_source_positions), persistent=False)

    def init_weights(self) -> None:
        self.pe = self._build(self.pe.shape[1] // 2 + 1).to(self.pe.device)

    def _build(self, length: int) -> torch.Tensor:
        position = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
        inv_freq = torch.exp(
            torch.arange(0, self.d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / self.d_model)
        )
        positive = torch.zeros(length, self.d_model)
        negative = torch.zeros(length, self.d_model)
        positive[:, 0::2] = torch.sin(position * inv_freq)
        positive[:, 1::2] = torch.cos(position * inv_freq)
        negative[:, 0::2] = torch.sin(-position * inv_freq)
        negative[:, 1::2] = torch.cos(-position * inv_freq)
        # distances L-1 ... 1, 0 followed by -1 ... -(L-1): shape (1, 2L - 1, d_model)
        return torch.cat([positive.flip(0), negative[1:]], dim=0)[None]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, T, d) -> (1, 2T - 1, d) sinusoids for distances T-1 ... -(T-1)."""
        length = hidden_states.shape[1]
        if self.pe.shape[1] < 2 * length - 1:
            self.pe = self._build(length).to(self.pe.device)
        center = self.pe.shape[1] // 2
        table = self.pe[:, center - length + 1 : center + length]
        return table.to(device=hidden_states.device, dtype=hidden_states.dtype)


class RotaryPositionalEmbedding(nn.Module):
    """cos/sin tables of rotary embeddings (RoFormer), one rotation frequency per pair of head dims."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        dim = config.head_size
        self.dim = dim
        self.base = config.rotary_embedding_base
        self.register_buffer("inv_freq", self._inverse_frequencies())
        self._cache: tuple[int, torch.dtype, torch.device, torch.Tensor] | None = None

    def _inverse_frequencies(self) -> torch.Tensor:
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2).float() / self.dim))

    def init_weights(self) -> None:
        self.inv_freq = self._inverse_frequencies().to(self.inv_freq.device)
        self._cache = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, T, d) -> (2, T, 1, head_size): stacked cos and sin, broadcastable over heads."""
        length, dtype, device = hidden_states.shape[1], hidden_states.dtype, hidden_states.device
        if self._cache is not None and self._cache[:3] == (length, dtype, device):
            return self._cache[3]
        positions = torch.arange(length, device=self.inv_freq.device, dtype=self.inv_freq.dtype)
        angles = positions[:, None] * self.inv_freq  # (T, head_size / 2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, head_size)
        table = torch.stack([angles.cos(), angles.sin()])[:, :, None, :].to(device=device, dtype=dtype)
        self._cache = (length, dtype, device, table)
        return table


def rotate_half_heads(hidden_states: torch.Tensor, table: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Apply rotary embeddings to (batch, T, num_heads * head_size) states, head by head."""
    batch, length, width = hidden_states.shape
    states = hidden_states.view(batch, length, num_heads, width // num_heads)
    cos, sin = table[0], table[1]  # (T, 1, head_size) each
    first, second = states.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (states * cos + rotated * sin).view(batch, length, width)


class PositionalConvEmbedding(nn.Module):
    """Grouped convolution with weight normalisation over the kernel axis (dim=2).

    Checkpoints store the normalisation either as `weight_g`/`weight_v` (old `torch.nn.utils.weight_norm`)
    or as `parametrizations.weight.original0/1` (the parametrization API, which current transformers
    writes). Both are accepted on load; the parametrization form is written on save.
    """

    _LEGACY_TO_PARAMETRIZED: ClassVar[dict[str, str]] = {
        "conv.weight_g": "conv.parametrizations.weight.original0",
        "conv.weight_v": "conv.parametrizations.weight.original1",
    }

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        conv = nn.Conv1d(
            config.hidden_size,
            config.hidden_size,
            kernel_size=config.num_conv_pos_embeddings,
            padding=config.num_conv_pos_embeddings // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        # An even kernel with padding k // 2 yields one extra frame, trimmed at the end.
        self.num_pad_remove = 1 if config.num_conv_pos_embeddings % 2 == 0 else 0
        self.activation = get_activation(config.feat_extract_activation)
        self._register_load_state_dict_pre_hook(self._rename_legacy_keys)

    def _rename_legacy_keys(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for legacy, current in self._LEGACY_TO_PARAMETRIZED.items():
            if prefix + legacy in state_dict:
                state_dict[prefix + current] = state_dict.pop(prefix + legacy)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, T, d) -> (batch, T, d)."""
        out = self.conv(hidden_states.transpose(1, 2))
        if self.num_pad_remove:
            out = out[:, :, : -self.num_pad_remove]
        return self.activation(out).transpose(1, 2)
