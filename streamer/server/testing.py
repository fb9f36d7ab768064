"""Helpers for testing the daemon end to end: a tiny random model, an in-process server, speech audio.

Used by ``tests/test_server_*.py``; kept in the package so that other transports' tests can reuse them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from streamer.config import Settings

TINY_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "A": 5, "B": 6, "C": 7, "D": 8, "E": 9}


# A 2-layer, 32-wide Wav2Vec2-Conformer with the real feature encoder's geometry (20 ms frames at 16 kHz):
# the one tiny runnable model of the tests (engine, server, trainer); vocab size aside. Model-only tests use
# `tests/conftest.py`'s `tiny_model_kwargs` instead, which also sizes every head and has 20-sample frames.
TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [16] * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "conv_depthwise_kernel_size": 7,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "pad_token_id": 0,
}


def wait_until_listening(proc: subprocess.Popen, timeout_s: float = 240.0) -> list[int]:
    """The 127.0.0.1 ports a ``conformer-streamer serve`` subprocess (text-mode stdout) prints on its
    "listening on" line; the default wait covers model import and load on a busy 2-core machine."""
    line = ""
    deadline = time.monotonic() + timeout_s
    while "listening on" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, proc.stderr.read()
    return [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", line)]


def make_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    """Save a randomly initialised, tiny Wav2Vec2-Conformer CTC model (HF layout) into ``directory``."""
    import torch

    from model import Wav2Vec2ConformerConfig, Wav2Vec2ConformerForCTC

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = Wav2Vec2ConformerConfig(vocab_size=len(TINY_VOCAB), **TINY_CONFIG)
    torch.manual_seed(seed)
    model = Wav2Vec2ConformerForCTC(config)
    with torch.no_grad():  # make the blank/word-delimiter less dominant so random audio yields words
        model.lm_head.bias.zero_()
        model.lm_head.bias[5:] += 2.0
    model.save_pretrained(directory)
    (directory / "vocab.json").write_text(json.dumps(TINY_VOCAB))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Wav2Vec2CTCTokenizer",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "word_delimiter_token": "|",
                "do_lower_case": True,
            }
        )
    )
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"})
    )
    (directory / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                "feature_size": 1,
                "sampling_rate": 16000,
                "padding_value": 0.0,
                "do_normalize": True,
                "return_attention_mask": True,
                "processor_class": "Wav2Vec2Processor",
            }
        )
    )
    return directory


def settings_for_tests(model_dir: str | Path | None = None, **limits: Any) -> Settings:
    """Settings for an in-process test server: random free ports on 127.0.0.1, short windows."""
    settings = Settings()
    settings.model.path = str(model_dir) if model_dir is not None else None
    settings.server.host = "127.0.0.1"
    settings.server.port = 0
    settings.server.vosk_port = 0
    settings.batching.max_wait_ms = 5.0
    # Test signals (tones, noise) are not speech: the energy gate lets them reach the (random) model.
    settings.streaming.vad = "energy"
    for name, value in limits.items():
        setattr(settings.limits, name, value)
    return settings


@contextlib.asynccontextmanager
async def running_app(settings: Settings, engine: Any, **kwargs: Any) -> AsyncIterator[Any]:
    """Start an ``App`` on this loop (engine already started); stop it gracefully afterwards."""
    from .app import App

    app = App(settings, engine, **kwargs)
    await app.start()
    try:
        yield app
    finally:
        await app.stop(timeout=15)


def synthesize(text: str, path: str | Path, rate: int = 16000) -> np.ndarray | None:
    """Speak ``text`` with flite (or espeak-ng) into a 16-bit mono WAV at ``rate``; int16 samples or None."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if shutil.which("flite"):  # CMU Flite's kal16 voice
            cmd = ["flite", "-voice", "kal16", "-t", text, "-o", str(raw)]
        elif shutil.which("espeak-ng"):
            cmd = ["espeak-ng", "-s", "150", "-w", str(raw), text]
        else:
            return None
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        if shutil.which("sox"):
            subprocess.run(
                ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)],
                check=True,
                capture_output=True,
                timeout=60,
            )
        else:  # pragma: no cover
            shutil.copy(raw, path)
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


async def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


async def native_finals_text(port: int, audio: bytes, frame_bytes: int = 3200, **start: Any) -> str:
    """Stream s16le ``audio`` to ``/v1/stream`` in real-time-sized frames; the finals' text, joined.

    Asserts the server closes normally (1000) after the last final.
    """
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
        await ws.send(json.dumps({"type": "start", **start}))
        await ws.recv()
        for i in range(0, len(audio), frame_bytes):
            await ws.send(audio[i : i + frame_bytes])
        await ws.send(json.dumps({"type": "end"}))
        finals = []
        async for message in ws:
            event = json.loads(message)
            if event["type"] == "final" and event["text"]:
                finals.append(event["text"])
        assert ws.close_code == 1000, ws.close_code
        return " ".join(finals)
