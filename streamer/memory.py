"""Give freed heap memory back to the operating system.

PyTorch on CPU allocates activations with malloc; a daemon that runs batches of changing shapes leaves
glibc's arenas fragmented, so RSS creeps up long after the peak even though nothing leaks. glibc's
``malloc_trim(0)`` releases the free pages. It is cheap (milliseconds) and harmless elsewhere: on a
libc without it this module does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time

log = logging.getLogger(__name__)


def _load_malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


class HeapTrimmer:
    """Calls ``malloc_trim(0)`` at most once per ``every_s`` seconds (0 disables it)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last = time.monotonic()
        self.trims = 0

    @property
    def available(self) -> bool:
        return _MALLOC_TRIM is not None

    def maybe_trim(self) -> bool:
        """Trim if enough time has passed since the last trim; True when it trimmed."""
        if self.every_s <= 0 or _MALLOC_TRIM is None:
            return False
        now = time.monotonic()
        if now - self._last < self.every_s:
            return False
        self._last = now
        _MALLOC_TRIM(0)
        self.trims += 1
        return True
