"""``conformer-streamer attention-mask``: show which encoder frames attend to which.

Two situations matter when reading model behaviour:

* a padded batch (``--lengths 3.0,1.7``): every item is padded to the longest, and the key-padding
  mask stops real frames from attending to padding frames (whose own outputs are computed but
  discarded);
* one streaming window (``--left 2 --chunk 0.5 --lookahead 0.5``, the default): the window is run as
  an independent utterance with full self-attention, and only its "owned" frames are kept.

The grid is drawn as text (downsampled to the terminal width) or as a PNG with ``--out FILE.png``.
Rows are query frames, columns key frames.
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.config import StreamingSettings
from streamer.windowing import FrameGeometry, WindowLayout

SAMPLE_RATE = 16_000

# Cell codes of the batch grid.
MASKED, PADDING_QUERY, ATTENDS = 0, 1, 2
BATCH_CHARS = {ATTENDS: "█", MASKED: "·", PADDING_QUERY: " "}
BATCH_LEGEND = "█ attends   · key is padding (masked out)   blank: padding query (output discarded)"
# Frame roles within a streaming window.
CONTEXT, OWNED, LOOKAHEAD = 0, 1, 2
ROLE_NAMES = {CONTEXT: "context", OWNED: "owned", LOOKAHEAD: "look-ahead"}
ROLE_CHARS = {CONTEXT: "c", OWNED: "O", LOOKAHEAD: "l"}
ROLE_CELLS = {CONTEXT: "░", OWNED: "█", LOOKAHEAD: "▒"}
ROLE_COLORS = {CONTEXT: "#9db4d0", OWNED: "#1f5fa8", LOOKAHEAD: "#f0a330"}
MIXED_CHAR = "▚"  # a downsampled cell covering more than one kind of frame


# -- computing the masks -----------------------------------------------------------------------------


def batch_attention_grids(lengths_s: Sequence[float], geometry: FrameGeometry) -> list[np.ndarray]:
    """One frames x frames grid per batch item, all padded to the longest item's frame count."""
    valid = [geometry.num_frames(round(seconds * SAMPLE_RATE)) for seconds in lengths_s]
    total = max(valid, default=0)
    grids = []
    for count in valid:
        grid = np.full((total, total), MASKED, dtype=np.int8)
        grid[:, :count] = ATTENDS
        grid[count:, :] = PADDING_QUERY
        grids.append(grid)
    return grids


@dataclass(frozen=True)
class WindowFrames:
    """Roles of the frames of one streaming window, from the engine's own window geometry."""

    layout: WindowLayout
    roles: np.ndarray  # one role code per output frame of the window

    @classmethod
    def from_seconds(cls, left_s: float, chunk_s: float, lookahead_s: float) -> WindowFrames:
        geometry = FrameGeometry()
        layout = WindowLayout.from_seconds(geometry, left_s, chunk_s, lookahead_s, SAMPLE_RATE)
        frames = geometry.num_frames(layout.window)
        roles = np.full(frames, LOOKAHEAD, dtype=np.int8)
        owned_from = layout.left // geometry.stride
        owned_to = (layout.left + layout.chunk) // geometry.stride
        roles[:owned_from] = CONTEXT
        roles[owned_from:owned_to] = OWNED
        return cls(layout, roles)

    def span(self, role: int) -> tuple[int, int]:
        """First and last frame index with ``role`` (-1, -1 if none)."""
        where = np.flatnonzero(self.roles == role)
        return (int(where[0]), int(where[-1])) if len(where) else (-1, -1)

    def attention_grid(self) -> np.ndarray:
        """Full attention inside the window: each cell carries the role of its key frame."""
        return np.broadcast_to(self.roles, (len(self.roles), len(self.roles))).copy()


# -- text rendering ----------------------------------------------------------------------------------


def _bins(count: int, limit: int) -> list[tuple[int, int]]:
    """Split ``range(count)`` into at most ``limit`` contiguous, nearly equal bins."""
    edges = np.linspace(0, count, min(count, max(limit, 1)) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def _cell(values: np.ndarray, chars: dict[int, str]) -> str:
    kinds = np.unique(values)
    return chars[int(kinds[0])] if len(kinds) == 1 else MIXED_CHAR


def _label_width(frames: int) -> int:
    """Characters taken by a row label such as ``"120-134 "``."""
    return len(f"{frames - 1}-{frames - 1} ")


def render_grid(grid: np.ndarray, chars: dict[int, str], width: int, max_rows: int) -> list[str]:
    """Draw ``grid`` in at most ``width`` characters (incl. a row label) and ``max_rows`` lines."""
    label_width = _label_width(len(grid))
    columns = _bins(grid.shape[1], width - label_width)
    lines = []
    for top, bottom in _bins(grid.shape[0], max_rows):
        label = f"{top}" if bottom - top == 1 else f"{top}-{bottom - 1}"
        cells = "".join(_cell(grid[top:bottom, left:right], chars) for left, right in columns)
        lines.append(f"{label:>{label_width - 1}} {cells}")
    return lines


def describe_batch(lengths_s: Sequence[float], width: int, max_rows: int) -> str:
    geometry = FrameGeometry()
    grids = batch_attention_grids(lengths_s, geometry)
    total = grids[0].shape[0] if grids else 0
    lines = [
        f"padded batch of {len(grids)}: {total} frames each ({geometry.stride / SAMPLE_RATE * 1000:.0f} ms "
        f"per frame); rows = query frames, columns = key frames",
        f"legend: {BATCH_LEGEND}   {MIXED_CHAR} mixed (downsampled)",
    ]
    for index, (seconds, grid) in enumerate(zip(lengths_s, grids, strict=True)):
        valid = int((grid[0] == ATTENDS).sum()) if total else 0
        lines.append("")
        lines.append(
            f"item {index}: {seconds:.2f} s -> {valid} of {total} frames valid, {total - valid} padding"
        )
        lines += render_grid(grid, BATCH_CHARS, width, max_rows)
    return "\n".join(lines)


def describe_window(frames: WindowFrames, width: int, max_rows: int) -> str:
    layout, stride = frames.layout, FrameGeometry().stride
    seconds = {
        "left": layout.left / SAMPLE_RATE,
        "chunk": layout.chunk / SAMPLE_RATE,
        "lookahead": layout.lookahead / SAMPLE_RATE,
    }
    lines = [
        f"streaming window: {seconds['left']:.2f} s left context + {seconds['chunk']:.2f} s chunk + "
        f"{seconds['lookahead']:.2f} s look-ahead = {layout.window / SAMPLE_RATE:.2f} s -> "
        f"{len(frames.roles)} frames",
    ]
    purposes = {
        CONTEXT: "history only; these frames were owned by earlier windows",
        OWNED: "this window's output is kept for these frames",
        LOOKAHEAD: "future audio; owned by the next window(s)",
    }
    for role in (CONTEXT, OWNED, LOOKAHEAD):
        first, last = frames.span(role)
        where = f"frames {first:>3}-{last:<3}" if first >= 0 else "no frames   "
        lines.append(f"  {ROLE_CHARS[role]} {ROLE_NAMES[role]:<10} {where} {purposes[role]}")
    lines.append(
        "full attention within the window: every frame attends to every frame of the window (no causal "
        "mask); cells show the key frame's role"
    )
    lines.append(
        f"legend: {ROLE_CELLS[CONTEXT]} context key  {ROLE_CELLS[OWNED]} owned key  "
        f"{ROLE_CELLS[LOOKAHEAD]} look-ahead key  {MIXED_CHAR} mixed (downsampled)"
    )
    grid_lines = render_grid(frames.attention_grid(), ROLE_CELLS, width, max_rows)
    label_width = _label_width(len(frames.roles))
    role_strip = "".join(
        _cell(frames.roles[a:b], ROLE_CHARS) for a, b in _bins(len(frames.roles), width - label_width)
    )
    lines.append(f"{'role':>{label_width - 1}} {role_strip}")
    lines += grid_lines
    step_frames = layout.chunk // stride
    lines.append("")
    lines.append(
        f"consecutive windows (steady state) advance by one chunk ({seconds['chunk']:.2f} s = "
        f"{step_frames} frames), so their owned spans tile the stream:"
    )
    lines += _window_timeline(frames, step_frames, width)
    return "\n".join(lines)


def _window_timeline(frames: WindowFrames, step_frames: int, width: int, count: int = 3) -> list[str]:
    """Roles of ``count`` successive windows on a shared time axis, so the owned spans tile."""
    total = len(frames.roles) + step_frames * (count - 1)
    scale = max(1, math.ceil(total / max(width - 10, 1)))
    rows = []
    for k in range(count):
        line = np.full(total, -1, dtype=np.int8)
        line[k * step_frames : k * step_frames + len(frames.roles)] = frames.roles
        cells = ""
        for a in range(0, total, scale):
            values = line[a : a + scale]
            cells += " " if np.all(values < 0) else _cell(values[values >= 0], ROLE_CHARS)
        rows.append(f"window {k} {cells.rstrip()}")
    return rows


# -- PNG rendering -----------------------------------------------------------------------------------

PANEL_INCHES = 4.0
PNG_DPI = 100


def save_batch_png(lengths_s: Sequence[float], path: Path) -> tuple[int, int]:
    """One panel per batch item; returns the image size in pixels."""
    plt, colors = _pyplot()
    grids = batch_attention_grids(lengths_s, FrameGeometry())
    cmap = colors.ListedColormap(["#d9d9d9", "#ffffff", "#1f5fa8"])  # masked, padding query, attends
    figure, axes = plt.subplots(
        1, len(grids), figsize=(PANEL_INCHES * len(grids), PANEL_INCHES + 0.6), layout="constrained"
    )
    for index, (axis, grid, seconds) in enumerate(zip(np.atleast_1d(axes), grids, lengths_s, strict=True)):
        axis.imshow(grid, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        valid = int((grid[0] == ATTENDS).sum())
        axis.set_title(f"item {index}: {seconds:.2f} s, {valid}/{len(grid)} frames", fontsize=9)
        axis.set_xlabel("key frame")
        axis.set_ylabel("query frame")
    _legend(figure, colors, {"attends": "#1f5fa8", "key is padding": "#d9d9d9", "padding query": "#ffffff"})
    return _save(figure, path, plt)


def save_window_png(frames: WindowFrames, path: Path) -> tuple[int, int]:
    plt, colors = _pyplot()
    cmap = colors.ListedColormap([ROLE_COLORS[CONTEXT], ROLE_COLORS[OWNED], ROLE_COLORS[LOOKAHEAD]])
    figure, axis = plt.subplots(figsize=(PANEL_INCHES * 1.5, PANEL_INCHES * 1.5 + 0.6), layout="constrained")
    axis.imshow(frames.attention_grid(), cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
    layout = frames.layout
    axis.set_title(
        f"streaming window {layout.left / SAMPLE_RATE:.2f} + {layout.chunk / SAMPLE_RATE:.2f} + "
        f"{layout.lookahead / SAMPLE_RATE:.2f} s: full attention, colour = key frame's role",
        fontsize=9,
    )
    axis.set_xlabel("key frame")
    axis.set_ylabel("query frame")
    _legend(figure, colors, {ROLE_NAMES[r]: ROLE_COLORS[r] for r in (CONTEXT, OWNED, LOOKAHEAD)})
    return _save(figure, path, plt)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colors
    from matplotlib import pyplot as plt

    return plt, colors


def _legend(figure, colors, entries: dict[str, str]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=color, edgecolor="black", label=label) for label, color in entries.items()]
    figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)


def _save(figure, path: Path, plt) -> tuple[int, int]:
    width, height = (figure.get_size_inches() * PNG_DPI).round().astype(int)
    figure.savefig(path, dpi=PNG_DPI)
    plt.close(figure)
    return int(width), int(height)


# -- command line ------------------------------------------------------------------------------------


def _seconds_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected seconds like 3.0,1.7: {error}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("lengths must be positive seconds, e.g. 3.0,1.7")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = StreamingSettings()
    parser.add_argument(
        "--lengths",
        type=_seconds_list,
        metavar="S,S,...",
        help="show a padded batch of these durations (seconds)",
    )
    parser.add_argument(
        "--left", type=float, help=f"window left context, s (default {defaults.left_context_s})"
    )
    parser.add_argument("--chunk", type=float, help=f"window chunk, s (default {defaults.chunk_s})")
    parser.add_argument(
        "--lookahead", type=float, help=f"window look-ahead, s (default {defaults.lookahead_s})"
    )
    parser.add_argument("--out", type=Path, metavar="FILE.png", help="write a PNG instead of text")
    parser.add_argument("--width", type=int, help="text width in characters (default: terminal width)")
    parser.add_argument("--rows", type=int, default=16, help="most grid rows in text output (default: 16)")


def run(args: argparse.Namespace) -> int:
    window_options = (args.left, args.chunk, args.lookahead)
    if args.lengths and any(v is not None for v in window_options):
        print(
            "error: --lengths (padded batch) and --left/--chunk/--lookahead (window) are separate views",
            file=sys.stderr,
        )
        return 2
    width = args.width or shutil.get_terminal_size((100, 24)).columns
    if args.lengths:
        if args.out:
            size = save_batch_png(args.lengths, args.out)
            print(f"wrote {args.out} ({size[0]}x{size[1]})")
        else:
            print(describe_batch(args.lengths, width, args.rows))
        return 0
    defaults = StreamingSettings()
    left, chunk, lookahead = (
        defaults.left_context_s if args.left is None else args.left,
        defaults.chunk_s if args.chunk is None else args.chunk,
        defaults.lookahead_s if args.lookahead is None else args.lookahead,
    )
    if min(left, chunk, lookahead) < 0 or chunk == 0:
        print("error: window sizes must be non-negative and the chunk longer than zero", file=sys.stderr)
        return 2
    frames = WindowFrames.from_seconds(left, chunk, lookahead)
    if args.out:
        size = save_window_png(frames, args.out)
        print(f"wrote {args.out} ({size[0]}x{size[1]})")
    else:
        print(describe_window(frames, width, args.rows))
    return 0
