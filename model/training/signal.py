"""The training audio's sample rate and the resampling every augmentation shares."""

from __future__ import annotations

import numpy as np

SR = 16000


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (length / factor, pitch * factor)."""
    import soxr

    if abs(factor - 1.0) < 1e-3:
        return x
    return soxr.resample(x, SR * factor, SR, quality="LQ").astype(np.float32)
