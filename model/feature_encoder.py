"""Convolutional front end: raw waveform -> frame features -> encoder-sized vectors."""

from __future__ import annotations

import torch
from torch import nn

from model.activations import get_activation
from model.channels_last import as_channels_last_image, conv1d_time_major, from_channels_last_image
from model.configuration import Wav2Vec2ConformerConfig


class FeatureConvLayer(nn.Module):
    """One strided 1-D convolution, optionally normalised, then the activation.

    `norm` is "group" (one group per channel: a per-channel normalisation over time, used only by the
    first layer of the group variant), "layer" (layer norm over channels for every frame) or None.
    """

    def __init__(self, config: Wav2Vec2ConformerConfig, layer_id: int, norm: str | None) -> None:
        super().__init__()
        in_channels = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        out_channels = config.conv_dim[layer_id]
        self.conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size=config.conv_kernel[layer_id],
            stride=config.conv_stride[layer_id],
            bias=config.conv_bias,
        )
        self.norm = norm
        if norm == "group":
            self.layer_norm: nn.Module | None = nn.GroupNorm(out_channels, out_channels, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_channels)
        else:
            self.layer_norm = None
        self.activation = get_activation(config.feat_extract_activation)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, frames, in_channels) -> (batch, frames', out_channels), time-major throughout."""
        hidden_states = conv1d_time_major(hidden_states, self.conv)
        if self.norm == "group":
            # Per-channel statistics over time, computed on the channels-last image view.
            image = self.layer_norm(as_channels_last_image(hidden_states))
            hidden_states = from_channels_last_image(image)
        elif self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)
        return self.activation(hidden_states)


class FeatureEncoder(nn.Module):
    """Stack of strided convolutions turning audio samples into one feature vector per frame."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        if config.feat_extract_norm == "group":
            norms: list[str | None] = ["group"] + [None] * (config.num_feat_extract_layers - 1)
        else:
            norms = ["layer"] * config.num_feat_extract_layers
        self.conv_layers = nn.ModuleList(
            FeatureConvLayer(config, layer_id, norm) for layer_id, norm in enumerate(norms)
        )

    def freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad = False

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, channels)."""
        hidden_states = input_values[:, :, None]  # (batch, samples, 1)
        for layer in self.conv_layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class FeatureProjection(nn.Module):
    """Layer norm + linear map from conv channels to the encoder width.

    The normalised (but unprojected) features are returned too: the pre-training quantizer uses them.
    """

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.layer_norm(features)
        return self.dropout(self.projection(normed)), normed


def conv_output_lengths(
    input_lengths: torch.Tensor | int,
    kernels: tuple[int, ...] | list[int],
    strides: tuple[int, ...] | list[int],
) -> torch.Tensor | int:
    """Number of frames a stack of unpadded convolutions produces from `input_lengths` samples.

    An input shorter than the receptive field gives a count <= 0 (callers clamp where that matters).
    """
    for kernel, stride in zip(kernels, strides, strict=True):
        if isinstance(input_lengths, torch.Tensor):
            input_lengths = torch.div(input_lengths - kernel, stride, rounding_mode="floor") + 1
        else:
            input_lengths = (input_lengths - kernel) // stride + 1
    return input_lengths


class AdapterLayer(nn.Module):
    """Strided conv + GLU halving the frame rate (output_hidden_size -> output_hidden_size)."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            config.output_hidden_size,
            2 * config.output_hidden_size,
            config.adapter_kernel_size,
            stride=config.adapter_stride,
            padding=1,
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return nn.functional.glu(self.conv(hidden_states), dim=1)


class Adapter(nn.Module):
    """Optional conv stack on top of the encoder that shortens the sequence (e.g. for seq2seq decoders)."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        if config.output_hidden_size != config.hidden_size:
            self.proj: nn.Module | None = nn.Linear(config.hidden_size, config.output_hidden_size)
            self.proj_layer_norm: nn.Module | None = nn.LayerNorm(config.output_hidden_size)
        else:
            self.proj = self.proj_layer_norm = None
        self.layers = nn.ModuleList(AdapterLayer(config) for _ in range(config.num_adapter_layers))
        self.layerdrop = config.layerdrop

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.proj is not None and self.proj_layer_norm is not None:
            hidden_states = self.proj_layer_norm(self.proj(hidden_states))
        hidden_states = hidden_states.transpose(1, 2)  # (batch, channels, frames)
        for layer in self.layers:
            if not self.training or torch.rand(()).item() > self.layerdrop:
                hidden_states = layer(hidden_states)
        return hidden_states.transpose(1, 2)
