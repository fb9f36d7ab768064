"""Start the raw-waveform front end as a mel-spaced Gabor filterbank instead of random noise.

A feature encoder trained from random weights on a few hours of speech spends thousands of steps
discovering band-pass filters before its CER starts to fall. Here the
first convolution starts as quadrature pairs (cosine and sine phase) of Hann-windowed tones at
mel-spaced centre frequencies, each window as long as its band is narrow, so the first layer already
measures a short-time spectrum; the rectifying GELU plus the strided layers after it turn the
quadrature samples into band envelopes. All weights stay trainable.
"""

from __future__ import annotations

import math

import torch


def hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: float) -> float:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def gabor_filterbank(
    num_bands: int,
    kernel_size: int,
    sample_rate: int = 16_000,
    low_hz: float = 60.0,
    high_hz: float | None = None,
) -> torch.Tensor:
    """(2 * num_bands, kernel_size) unit-norm filters: band b's cosine at row 2b, its sine at 2b + 1.

    A Hann window of N taps passes about 2 * sample_rate / N Hz, so each band's window is sized to
    cover the gap to its neighbours (capped at the kernel): narrow, long filters low, short ones high.
    """
    high_hz = high_hz if high_hz is not None else 0.95 * sample_rate / 2
    mels = torch.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), num_bands + 2)
    edges = [mel_to_hz(float(m)) for m in mels]
    filters = torch.zeros(2 * num_bands, kernel_size)
    for band in range(num_bands):
        centre = edges[band + 1]
        spacing = (edges[band + 2] - edges[band]) / 2
        taps = int(min(kernel_size, max(16, round(2 * sample_rate / spacing))))
        start = (kernel_size - taps) // 2
        t = (torch.arange(taps) - (taps - 1) / 2) / sample_rate
        window = torch.hann_window(taps, periodic=False)
        for phase, wave in enumerate((torch.cos, torch.sin)):
            row = window * wave(2 * math.pi * centre * t)
            filters[2 * band + phase, start : start + taps] = row / row.norm()
    return filters


@torch.no_grad()
def init_feature_encoder_as_filterbank(model: torch.nn.Module, sample_rate: int = 16_000) -> None:
    """Overwrite the first feature-encoder convolution of a Wav2Vec2-Conformer with a Gabor filterbank."""
    conv = model.wav2vec2_conformer.feature_extractor.conv_layers[0].conv
    out_channels, in_channels, kernel = conv.weight.shape
    if in_channels != 1 or out_channels % 2:
        raise ValueError("the filterbank start needs a one-channel input and an even channel count")
    conv.weight.copy_(gabor_filterbank(out_channels // 2, kernel, sample_rate)[:, None, :])
    if conv.bias is not None:
        conv.bias.zero_()
