"""Progress bars for the long training jobs: tqdm's when it is installed (the ``train`` extra), else a
silent counter, so that the training code also runs where only the runtime and test packages are."""

from __future__ import annotations

import sys
from typing import Any


class _SilentBar:
    """The part of tqdm's interface the training jobs use; messages still go to standard output."""

    def __init__(self, initial: int = 0, **_: Any) -> None:
        self.n = initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **_: Any) -> None:
        pass

    def write(self, message: str) -> None:
        print(message, file=sys.stdout)

    def close(self) -> None:
        pass


def progress_bar(**kwargs: Any) -> Any:
    """``tqdm(**kwargs)``, or a `_SilentBar` without tqdm."""
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return _SilentBar(**kwargs)
    return tqdm(**kwargs)
