"""Multi-head self-attention of the Conformer block, with optional relative or rotary positions."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from model.configuration import Wav2Vec2ConformerConfig
from model.positional import rotate_half_heads


def skew_relative_scores(scores: torch.Tensor) -> torch.Tensor:
    """Re-index scores over relative distances into scores over key positions, without copying.

    `scores[..., i, k]` holds the score of query i against distance index k, where index k encodes the
    distance T - 1 - k (see `RelativePositionalEncoding`); key j sits at distance i - j, i.e. at index
    T - 1 - i + j. Moving one query row down therefore moves the window one element to the left, so
    the (T, T) result is a strided view of the contiguous (T, 2T - 1) rows with row stride 2T - 2.
    This replaces the pad-reshape-slice "shift trick" of Transformer-XL, which copies twice.
    """
    *lead, length, width = scores.shape  # width == 2 * length - 1
    scores = scores.contiguous()
    lead_strides = scores.stride()[:-2]
    return scores.as_strided(
        (*lead, length, length),
        (*lead_strides, width - 1, 1),
        scores.storage_offset() + length - 1,
    )


class ConformerSelfAttention(nn.Module):
    """Scaled dot-product attention over all frames (bidirectional).

    With relative positions the score is (q + u)·k + (q + v)·r_{i-j} (Transformer-XL, section 3.3):
    the second term is computed as one matmul against the 2T - 1 distance embeddings, re-indexed by a
    strided view and handed to `scaled_dot_product_attention` as an additive bias, so the fused kernel
    still does the softmax and the value product.
    """

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.scaling = self.head_size**-0.5
        self.position_embeddings_type = config.position_embeddings_type
        self.dropout_p = config.attention_dropout
        width = config.hidden_size
        self.linear_q = nn.Linear(width, width)
        self.linear_k = nn.Linear(width, width)
        self.linear_v = nn.Linear(width, width)
        self.linear_out = nn.Linear(width, width)
        if self.position_embeddings_type == "relative":
            self.linear_pos = nn.Linear(width, width, bias=False)
            self.pos_bias_u = nn.Parameter(torch.zeros(self.num_heads, self.head_size))
            self.pos_bias_v = nn.Parameter(torch.zeros(self.num_heads, self.head_size))
        # Projected distance embeddings only depend on the weights and T: reused across inference calls.
        self._position_cache: tuple[Any, torch.Tensor] | None = None

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_size).transpose(1, 2)  # (B, H, T, hs)

    def _projected_positions(self, position_embeddings: torch.Tensor) -> torch.Tensor:
        """(1, 2T - 1, d) sinusoids -> (H, hs, 2T - 1) projected distance keys."""
        weight = getattr(self.linear_pos, "weight", None)
        version = None
        if isinstance(weight, torch.Tensor):  # inference tensors have no version counter
            version = (-1 if weight.is_inference() else weight._version, weight.data_ptr())
        key = (
            position_embeddings.shape,
            position_embeddings.dtype,
            position_embeddings.device,
            id(self.linear_pos),
            version,
        )
        cacheable = not torch.is_grad_enabled()
        if cacheable and self._position_cache is not None and self._position_cache[0] == key:
            return self._position_cache[1]
        projected = self.linear_pos(position_embeddings)[0]  # (2T - 1, d)
        # (2T - 1, H, hs) -> (H, hs, 2T - 1)
        projected = projected.view(-1, self.num_heads, self.head_size).permute(1, 2, 0)
        if cacheable:
            self._position_cache = (key, projected)
        else:
            self._position_cache = None
        return projected

    def _relative_position_bias(self, query: torch.Tensor, position_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, H, T, hs) queries -> (B, H, T, T) scaled score bias (a strided view, see the skew)."""
        query_v = (query + self.pos_bias_v[:, None, :]) * self.scaling
        scores = torch.matmul(query_v, self._projected_positions(position_embeddings))  # (B, H, T, 2T-1)
        return skew_relative_scores(scores)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        position_embeddings: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, T, d); key_padding_mask (B, T) bool, True for real frames.

        Returns the attended states (B, T, d) and, if asked for, the attention weights (B, H, T, T).
        """
        batch, length, width = hidden_states.shape
        query_key_input = hidden_states
        if self.position_embeddings_type == "rotary":
            if position_embeddings is None:
                raise ValueError("rotary attention needs the rotary table")
            query_key_input = rotate_half_heads(hidden_states, position_embeddings, self.num_heads)
        query = self._split_heads(self.linear_q(query_key_input))
        key = self._split_heads(self.linear_k(query_key_input))
        value = self._split_heads(self.linear_v(hidden_states))

        bias: torch.Tensor | None = None
        if self.position_embeddings_type == "relative":
            if position_embeddings is None:
                raise ValueError("relative attention needs the distance embeddings")
            bias = self._relative_position_bias(query, position_embeddings)
            query = query + self.pos_bias_u[:, None, :]
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]  # (B, 1, 1, T)
        if mask is not None and bias is not None:
            bias = bias.masked_fill(~mask, torch.finfo(bias.dtype).min)
        elif mask is not None:
            bias = mask

        dropout_p = self.dropout_p if self.training else 0.0
        weights = None
        if output_attentions:
            scores = torch.matmul(query, key.transpose(-1, -2)) * self.scaling
            if bias is not None:
                scores = (
                    scores.masked_fill(~bias, torch.finfo(scores.dtype).min)
                    if bias.dtype == torch.bool
                    else scores + bias
                )
            weights = scores.softmax(dim=-1)
            attended = torch.matmul(F.dropout(weights, dropout_p, self.training), value)
        else:
            attended = F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias, dropout_p=dropout_p, scale=self.scaling
            )
        attended = attended.transpose(1, 2).reshape(batch, length, width)  # (B, T, H * hs)
        return self.linear_out(attended), weights
