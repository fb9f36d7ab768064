"""Conformer encoder: macaron feed-forwards around self-attention and a depthwise convolution module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from model.activations import get_activation
from model.attention import ConformerSelfAttention
from model.channels_last import as_channels_last_image, conv1d_time_major, from_channels_last_image
from model.configuration import Wav2Vec2ConformerConfig
from model.positional import PositionalConvEmbedding, RelativePositionalEncoding, RotaryPositionalEmbedding


class PointwiseConv1d(nn.Linear):
    """A kernel-size-1 Conv1d computed as a Linear on (batch, T, channels).

    Working channels-last avoids two transposes per block and lets dynamic int8 quantization treat it
    like any other Linear. Checkpoints store Conv1d weights (out, in, 1): the hooks convert on the fly.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, bias=False)
        self._register_load_state_dict_pre_hook(self._squeeze_conv_weight)
        self._register_state_dict_hook(self._unsqueeze_conv_weight)

    @staticmethod
    def _squeeze_conv_weight(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        weight = state_dict.get(prefix + "weight")
        if isinstance(weight, torch.Tensor) and weight.dim() == 3:
            state_dict[prefix + "weight"] = weight.squeeze(-1)

    @staticmethod
    def _unsqueeze_conv_weight(
        module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
    ) -> None:
        weight = state_dict.get(prefix + "weight")
        if isinstance(weight, torch.Tensor) and weight.dim() == 2:
            state_dict[prefix + "weight"] = weight.unsqueeze(-1)


class FeedForward(nn.Module):
    """Position-wise MLP: d -> intermediate -> d."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = get_activation(config.hidden_act)
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.intermediate_dropout(
            self.intermediate_act_fn(self.intermediate_dense(hidden_states))
        )
        return self.output_dropout(self.output_dense(hidden_states))


class ConformerConvolutionModule(nn.Module):
    """LayerNorm -> pointwise conv + GLU -> depthwise conv -> BatchNorm -> activation -> pointwise conv."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        kernel = config.conv_depthwise_kernel_size
        if kernel % 2 == 0:
            raise ValueError("conv_depthwise_kernel_size must be odd so that 'same' padding is symmetric")
        width = config.hidden_size
        self.layer_norm = nn.LayerNorm(width)
        self.pointwise_conv1 = PointwiseConv1d(width, 2 * width)
        self.depthwise_conv = nn.Conv1d(
            width, width, kernel, padding=(kernel - 1) // 2, groups=width, bias=False
        )
        self.batch_norm = nn.BatchNorm1d(width)
        self.activation = get_activation(config.hidden_act)
        self.pointwise_conv2 = PointwiseConv1d(width, width)
        self.dropout = nn.Dropout(config.conformer_conv_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T, d), time-major throughout (see model.channels_last)."""
        hidden_states = self.pointwise_conv1(self.layer_norm(hidden_states))  # (B, T, 2d)
        hidden_states = nn.functional.glu(hidden_states, dim=-1)  # (B, T, d)
        hidden_states = conv1d_time_major(hidden_states, self.depthwise_conv)
        if self.training:
            # BatchNorm1d wants (B, d, T); training updates running statistics, so use the module.
            hidden_states = self.batch_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        else:
            # Inference: a per-channel affine map, applied on the channels-last image without copies.
            norm = self.batch_norm
            image = F.batch_norm(
                as_channels_last_image(hidden_states),
                norm.running_mean,
                norm.running_var,
                norm.weight,
                norm.bias,
                training=False,
                eps=norm.eps,
            )
            hidden_states = from_channels_last_image(image)
        return self.dropout(self.pointwise_conv2(self.activation(hidden_states)))


class ConformerEncoderLayer(nn.Module):
    """One Conformer block (Gulati et al. 2020): ½FFN, MHSA, Conv, ½FFN, LayerNorm, all residual."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.ffn1_layer_norm = nn.LayerNorm(width)
        self.ffn1 = FeedForward(config)
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.self_attn = ConformerSelfAttention(config)
        self.self_attn_dropout = nn.Dropout(config.attention_dropout)
        self.conv_module = ConformerConvolutionModule(config)
        self.ffn2_layer_norm = nn.LayerNorm(width)
        self.ffn2 = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(width)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        position_embeddings: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden_states = hidden_states + 0.5 * self.ffn1(self.ffn1_layer_norm(hidden_states))
        attended, weights = self.self_attn(
            self.self_attn_layer_norm(hidden_states), key_padding_mask, position_embeddings, output_attentions
        )
        hidden_states = hidden_states + self.self_attn_dropout(attended)
        hidden_states = hidden_states + self.conv_module(hidden_states)
        hidden_states = hidden_states + 0.5 * self.ffn2(self.ffn2_layer_norm(hidden_states))
        return self.final_layer_norm(hidden_states), weights


@dataclass
class EncoderResult:
    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class ConformerEncoder(nn.Module):
    """Positions + a stack of Conformer blocks + final LayerNorm, with LayerDrop in training."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        self.layerdrop = config.layerdrop
        if config.position_embeddings_type == "relative":
            self.embed_positions: nn.Module | None = RelativePositionalEncoding(config)
        elif config.position_embeddings_type == "rotary":
            self.embed_positions = RotaryPositionalEmbedding(config)
        else:
            self.embed_positions = None
        # Not applied by the Conformer (see model.positional); present for checkpoint compatibility.
        self.pos_conv_embed = PositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(ConformerEncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> EncoderResult:
        """hidden_states (B, T, d); key_padding_mask (B, T) bool, True for real frames."""
        if key_padding_mask is not None:
            hidden_states = hidden_states.masked_fill(~key_padding_mask[..., None], 0.0)
            if bool(key_padding_mask.all()):
                key_padding_mask = None  # nothing to mask: lets attention take the unmasked fast path
        hidden_states = self.dropout(hidden_states)
        positions = self.embed_positions(hidden_states) if self.embed_positions is not None else None

        all_hidden: list[torch.Tensor] = [hidden_states]
        all_attentions: list[torch.Tensor] = []
        for layer in self.layers:
            if self.training and self.layerdrop > 0.0 and torch.rand(()).item() < self.layerdrop:
                continue
            hidden_states, weights = layer(hidden_states, key_padding_mask, positions, output_attentions)
            all_hidden.append(hidden_states)
            if weights is not None:
                all_attentions.append(weights)
        return EncoderResult(
            last_hidden_state=self.layer_norm(hidden_states),
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )
