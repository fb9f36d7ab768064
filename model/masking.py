"""Masks: SpecAugment spans, negatives for the contrastive loss, and frame-level padding masks.

`compute_mask_indices` and `sample_negative_indices` draw from numpy's global RNG in the same order as
transformers' `_compute_mask_indices` / `_sample_negative_indices`, so with the same seed they return
the same masks, which is what makes training losses comparable between the two implementations.
"""

from __future__ import annotations

import numpy as np
import torch


def compute_mask_indices(
    shape: tuple[int, int],
    mask_prob: float,
    mask_length: int,
    attention_mask: torch.Tensor | None = None,
    min_masks: int = 0,
) -> np.ndarray:
    """Random spans of `mask_length` covering about `mask_prob` of each row; returns a (batch, T) bool array.

    Span starts are sampled without replacement among the valid positions of each row (`attention_mask`
    shortens rows); spans may overlap, so `mask_prob` is an upper bound. Every row gets at least
    `min_masks` spans when it is long enough. Rows with fewer spans than the longest pad their list by
    repeating a start, which keeps the vectorised scatter simple.
    """
    batch_size, sequence_length = shape
    if mask_length < 1:
        raise ValueError("mask_length has to be at least 1")
    if mask_length > sequence_length:
        raise ValueError(f"mask_length {mask_length} exceeds the sequence length {sequence_length}")

    # One uniform draw shared by the batch makes the rounding of the span count stochastic.
    epsilon = np.random.rand(1).item()

    def num_spans(length: int) -> int:
        count = max(int(mask_prob * length / mask_length + epsilon), min_masks)
        count = min(count, sequence_length // mask_length)
        return max(min(count, length - (mask_length - 1)), 0)

    lengths = (
        attention_mask.detach().sum(-1).tolist()
        if attention_mask is not None
        else [sequence_length] * batch_size
    )
    mask = np.zeros((batch_size, sequence_length), dtype=bool)
    max_spans = num_spans(sequence_length)
    if max_spans == 0:
        return mask

    starts = np.empty((batch_size, max_spans), dtype=np.int64)
    for row, length in enumerate(lengths):
        count = num_spans(length)
        row_starts = np.random.choice(np.arange(length - (mask_length - 1)), count, replace=False)
        filler = row_starts[0] if len(row_starts) else sequence_length - 1
        starts[row] = np.concatenate([row_starts, np.full(max_spans - count, filler)])

    # (batch, spans, 1) + (mask_length,) -> every masked index, clipped to the row.
    indices = (starts[:, :, None] + np.arange(mask_length)).reshape(batch_size, -1)
    np.put_along_axis(mask, np.minimum(indices, sequence_length - 1), True, axis=-1)
    return mask


def sample_negative_indices(
    features_shape: tuple[int, int], num_negatives: int, mask_time_indices: np.ndarray | None = None
) -> np.ndarray:
    """For each masked frame, `num_negatives` other masked frames of the same utterance.

    Returns flat indices into (batch * T) of shape (batch, T, num_negatives); unmasked frames point to
    frame 0 of their utterance and are ignored by the loss. A frame never samples itself.
    """
    batch_size, sequence_length = features_shape
    frames = np.arange(sequence_length)
    negatives = np.zeros((batch_size, sequence_length, num_negatives), dtype=np.int32)
    masked = (
        mask_time_indices.astype(bool)
        if mask_time_indices is not None
        else np.ones(features_shape, dtype=bool)
    )
    for row in range(batch_size):
        count = masked[row].sum()
        masked_frames = frames[masked[row]]
        own = np.broadcast_to(np.arange(count)[:, None], (count, num_negatives))
        # Draw among count - 1 others, then skip over the frame itself to stay uniform.
        drawn = np.random.randint(0, count - 1, size=(count, num_negatives))
        drawn[drawn >= own] += 1
        negatives[row][masked[row]] = masked_frames[drawn]
        negatives[row] += row * sequence_length
    return negatives


def frame_padding_mask(output_lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(batch,) valid frame counts -> (batch, num_frames) bool mask, True for real frames."""
    return torch.arange(num_frames, device=output_lengths.device)[None, :] < output_lengths[:, None]
