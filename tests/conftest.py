"""Shared fixtures. Keep it small: one fixture per widely shared need."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the package may not be pip-installed in a fresh checkout
    sys.path.insert(0, str(ROOT))


def shipped_model_dir() -> Path | None:
    """The embedded default model's directory when its weights are in the checkout, else None (test modules
    that need the trained model skip without it)."""
    from model import default_model_dir

    path = Path(default_model_dir())
    return path if (path / "config.json").is_file() else None


TINY_MODEL_KWARGS: dict[str, Any] = {
    "vocab_size": 12,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "conv_dim": (16, 16, 16),
    "conv_stride": (5, 2, 2),
    "conv_kernel": (10, 3, 3),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "conv_depthwise_kernel_size": 5,
    "max_source_positions": 256,
    "num_codevectors_per_group": 8,
    "num_codevector_groups": 2,
    "codevector_dim": 16,
    "proj_codevector_dim": 12,
    "classifier_proj_size": 10,
    "tdnn_dim": (16, 16, 24),
    "tdnn_kernel": (3, 3, 1),
    "tdnn_dilation": (1, 2, 1),
    "xvector_output_dim": 14,
    "num_labels": 3,
}


@pytest.fixture
def tiny_model_kwargs() -> dict[str, Any]:
    """Config fields of a Wav2Vec2-Conformer small enough to run in milliseconds (20 ms frames = 20 samples)."""
    return dict(TINY_MODEL_KWARGS)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random tiny CTC model in Hugging Face layout (modules may override with their own model)."""
    from streamer.server.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def engine(model_dir):
    """A started RecognitionEngine on ``model_dir``, shared by one test module."""
    from streamer.engine import RecognitionEngine
    from streamer.server.testing import settings_for_tests

    engine = RecognitionEngine(settings_for_tests(model_dir))
    engine.start()
    yield engine
    engine.stop(drain=False)
