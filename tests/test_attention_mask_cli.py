"""``conformer-streamer attention-mask``: mask contents, text view and PNG output."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from streamer import cli
from streamer.commands import attention_mask as am
from streamer.windowing import FrameGeometry


def _png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


def test_batch_grids_mask_padding_keys_and_queries():
    grids = am.batch_attention_grids([3.0, 1.7], FrameGeometry())
    assert [g.shape for g in grids] == [(149, 149), (149, 149)]
    assert np.all(grids[0] == am.ATTENDS)
    short = grids[1]
    assert np.all(short[:84, :84] == am.ATTENDS)
    assert np.all(short[:84, 84:] == am.MASKED)
    assert np.all(short[84:] == am.PADDING_QUERY)


def test_window_roles_follow_the_engine_layout():
    frames = am.WindowFrames.from_seconds(2.0, 0.5, 0.5)
    assert frames.span(am.CONTEXT) == (0, 99)
    assert frames.span(am.OWNED) == (100, 124)
    assert frames.span(am.LOOKAHEAD) == (125, 148)
    grid = frames.attention_grid()
    assert grid.shape == (149, 149) and all(np.array_equal(row, frames.roles) for row in grid)


def test_batch_text_view(capsys):
    assert cli.main(["attention-mask", "--lengths", "3.0,1.7", "--width", "80", "--rows", "16"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert "item 0: 3.00 s -> 149 of 149 frames valid, 0 padding" in lines
    assert "item 1: 1.70 s -> 84 of 149 frames valid, 65 padding" in lines
    assert max(len(line) for line in lines if line.startswith(" ") or line[:1].isdigit()) <= 80
    item1 = lines[lines.index("item 1: 1.70 s -> 84 of 149 frames valid, 65 padding") + 1 :]
    first_row, last_row = item1[0].split(maxsplit=1)[1], item1[15]
    assert first_row.startswith("█" * 30) and first_row.endswith("·" * 20)
    assert last_row.startswith("140-148") and last_row[8:].strip() == ""
    assert "legend:" in text


def test_window_text_view(capsys):
    args = ["attention-mask", "--left", "2.0", "--chunk", "0.5", "--lookahead", "0.5", "--width", "100"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "= 3.00 s -> 149 frames" in text
    assert "c context    frames   0-99" in text
    assert "O owned      frames 100-124" in text
    assert "l look-ahead frames 125-148" in text
    assert "every frame attends to every frame of the window" in text
    grid_rows = [line for line in text.splitlines() if line.strip()[:1].isdigit() and "░" in line]
    assert len(grid_rows) == 16 and len(set(row.split(maxsplit=1)[1] for row in grid_rows)) == 1
    assert sum(line.startswith("window ") for line in text.splitlines()) == 3


@pytest.mark.parametrize(
    ("args", "size"),
    [
        (["--lengths", "3.0,1.7"], (800, 460)),
        (["--left", "1", "--chunk", "0.5", "--lookahead", "0.5"], (600, 660)),
    ],
)
def test_png_output_has_expected_size(tmp_path, capsys, args, size):
    pytest.importorskip("matplotlib")
    out = tmp_path / "mask.png"
    assert cli.main(["attention-mask", *args, "--out", str(out)]) == 0
    assert _png_size(out) == size
    assert f"({size[0]}x{size[1]})" in capsys.readouterr().out


def test_batch_and_window_options_are_exclusive(capsys):
    assert cli.main(["attention-mask", "--lengths", "1", "--chunk", "0.5"]) == 2
    assert "separate views" in capsys.readouterr().err
