"""bf16 and "auto" as CPU modes of the engine and `transcribe`; float16 refused on CPU at startup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import cpu_fast_path
from streamer import cli
from streamer.engine import RecognitionEngine
from streamer.server.testing import settings_for_tests

DATA = Path(__file__).parent / "data"


def engine_for(model_dir: Path, dtype: str, quantize: str | None = None) -> RecognitionEngine:
    settings = settings_for_tests(model_dir)
    settings.model.dtype = dtype
    settings.model.quantize = quantize
    return RecognitionEngine(settings)


def windows(seconds: float = 1.0, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, int(seconds * 16000))).astype(np.float32)


def test_bfloat16_engine_runs_on_cpu_close_to_float32(model_dir: Path) -> None:
    fp32 = engine_for(model_dir, "float32")
    bf16 = engine_for(model_dir, "bfloat16")
    assert bf16.backend.dtype == torch.bfloat16 and bf16.model.dtype == torch.bfloat16
    expected, actual = fp32.backend(windows()), bf16.backend(windows())
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    # bf16 keeps 8 bits of mantissa: log-probabilities drift by a few hundredths, not by whole units
    assert 0 < np.abs(actual - expected).max() < 0.5
    finals = bf16.transcribe_stream(windows(3.0, 1)[0], 1600)
    assert isinstance(finals, list)


def test_float16_on_cpu_fails_at_startup(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        engine_for(model_dir, "float16")
    with pytest.raises(ValueError, match="dtype"):
        engine_for(model_dir, "half")


@pytest.mark.parametrize("bf16_hardware", [True, False])
def test_auto_dtype_picks_bf16_only_on_bf16_hardware(model_dir: Path, monkeypatch, bf16_hardware) -> None:
    monkeypatch.setattr(cpu_fast_path, "native_bf16", lambda: bf16_hardware)
    monkeypatch.setattr("model.quantize.native_bf16", lambda: bf16_hardware)
    engine = engine_for(model_dir, "auto")
    expected = torch.bfloat16 if bf16_hardware else torch.float32
    assert engine.backend.dtype == expected and engine.model.dtype == expected
    assert engine_for(model_dir, "auto", quantize="int8").backend.dtype == torch.float32


def test_transcribe_cli_accepts_auto_and_bfloat16(model_dir: Path, capsys) -> None:
    wav = str(DATA / "hello_world.wav")
    for dtype in ("auto", "bfloat16"):
        assert (
            cli.main(["transcribe", "--model", str(model_dir), "--dtype", dtype, "--decoder", "greedy", wav])
            == 0
        )
    assert len(capsys.readouterr().out.splitlines()) == 2


# (batch, frames) of a depthwise convolution that froze oneDNN's bf16 kernel generation for over 5 minutes
# on a 2-thread AMX host (session 17); fp32 takes milliseconds
_FROZE_BF16 = ((1, 124), (3, 382), (5, 126))
_DEPTHWISE_IN_BF16 = """
import sys, torch
torch.set_num_threads(2)
from model.channels_last import conv1d_time_major
conv = torch.nn.Conv1d(144, 144, 15, padding=7, groups=144, bias=False)
with torch.no_grad():
    for batch, frames in {shapes}:
        x = torch.randn(batch, frames, 144)
        y = conv1d_time_major(x.to(torch.bfloat16), conv.to(torch.bfloat16))  # bf16 weights: inference
        conv.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 weights under autocast: training
            z = conv1d_time_major(x, conv)
        ref = conv1d_time_major(x, conv)
        assert y.dtype == z.dtype == torch.bfloat16 and y.shape == ref.shape, (y.dtype, z.dtype, y.shape)
        assert (z.float() - ref).abs().max() < 0.05 * ref.abs().max(), "autocast depthwise drifted"
print("ok")
"""


def test_bf16_depthwise_convolution_finishes_on_two_threads() -> None:
    """Depthwise convolutions with bf16 inputs run in fp32 on CPU: a subprocess (a frozen kernel generation
    cannot be interrupted in-process) must finish the shapes that froze oneDNN within a minute."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    code = _DEPTHWISE_IN_BF16.format(shapes=_FROZE_BF16)
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
