"""Convolutions on time-major (batch, T, channels) tensors without transposing copies.

The encoder works on (B, T, C) tensors, the layout of Linear and LayerNorm. A (B, T, C) tensor is, byte
for byte, a channels-last (B, C, 1, T) image, and oneDNN runs channels-last 2-D convolutions natively,
so a 1-D convolution can read and write time-major memory directly. On a 10 s input this removes
several copies of (512 x 32000)-element activations from the feature encoder alone.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F


def as_channels_last_image(hidden_states: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B, C, 1, T) view sharing memory (channels-last strides)."""
    return hidden_states.unsqueeze(1).permute(0, 3, 1, 2)


def from_channels_last_image(image: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, T) -> (B, T, C) view; contiguous when `image` is channels-last."""
    return image.squeeze(2).transpose(1, 2)


@functools.cache
def _cpu_has_bf16_convolution() -> bool:
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def conv1d_time_major(hidden_states: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Apply `conv` (weights (out, in / groups, k)) to (B, T, in) and return (B, T', out).

    bf16 on a CPU computes in fp32 where oneDNN's bf16 kernel is missing or unsafe:
    * without oneDNN bf16 kernels, torch's fallback is `aten::_slow_conv2d_forward`, one call per group of
      a depthwise convolution (~6x slower);
    * a depthwise convolution in bf16: on an AMX host with 2 threads oneDNN's `brdgmm_dw_convolution`
      spent over 5 minutes generating its kernel for shapes as plain as batch 1 x 124 frames (batch 3 x 382,
      5 x 126, ...), which froze bf16 inference and bf16 training (``tests/test_cpu_precision_modes.py``). It is
      15 multiply-adds per channel and frame, a sliver of a layer, so fp32 costs nothing that matters.
    """
    if hidden_states.device.type == "cpu" and _bf16_on_cpu(hidden_states):
        depthwise = conv.groups > 1 and conv.groups == conv.in_channels
        if depthwise or not _cpu_has_bf16_convolution():
            bias = None if conv.bias is None else conv.bias.float()
            with torch.autocast("cpu", enabled=False):
                out = _conv1d(hidden_states.float(), conv, conv.weight.float(), bias)
            return out.to(torch.bfloat16)
    return _conv1d(hidden_states, conv, conv.weight, conv.bias)


def _bf16_on_cpu(hidden_states: torch.Tensor) -> bool:
    """The convolution would run in bf16: a bf16 input, or fp32 under CPU bf16 autocast (training)."""
    if hidden_states.dtype == torch.bfloat16:
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def _conv1d(
    hidden_states: torch.Tensor, conv: nn.Conv1d, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    (stride,), (dilation,), (kernel,) = conv.stride, conv.dilation, conv.kernel_size
    if conv.in_channels == 1 and conv.groups == 1 and conv.padding == (0,) and dilation == 1:
        # Single input channel (raw audio): a matmul over strided windows, which also yields (B, T', out)
        # directly; oneDNN would pick a channels-first layout for a one-channel input.
        windows = hidden_states[..., 0].unfold(-1, kernel, stride)  # (B, T', k)
        return F.linear(windows, weight.view(conv.out_channels, kernel), bias)
    image = F.conv2d(
        as_channels_last_image(hidden_states),
        weight.unsqueeze(2),  # (out, in / groups, 1, k)
        bias,
        stride=(1, stride),
        padding=(0, conv.padding[0]),
        dilation=(1, dilation),
        groups=conv.groups,
    )
    return from_channels_last_image(image)
