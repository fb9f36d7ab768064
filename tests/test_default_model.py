"""The embedded default model (model/pretrained/en-small): loads with our code and with transformers,
and transcribes freshly synthesized speech."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

MODEL_DIR = Path(__file__).resolve().parents[1] / "model" / "pretrained" / "en-small"
# A Harvard sentence: evaluation-only text, never in the training corpus.
SENTENCE = "THE BIRCH CANOE SLID ON THE SMOOTH PLANKS"
# What the shipped model reaches on this test plus a small margin (see its model card); keep it honest,
# not aspirational. Greedy CER, en-small stage 3 (session 4): 0.17 (rms, unseen speaker), 0.15 (kal16);
# stage 4 (session 5): 0.27 and 0.10 (one sentence is noisy: stage 4 is better on the 100 held-out rms
# utterances, 30.8% vs 32.6%). The target of issue 3 is 0.10 for both: lower these as better models ship.
MAX_CER = {"rms": 0.32, "kal16": 0.15}

pytestmark = pytest.mark.skipif(not (MODEL_DIR / "model.safetensors").exists(), reason="no embedded model")


def _cer(ref: str, hyp: str) -> float:
    from model.training.evaluation import edit_distance

    return edit_distance(list(ref), list(hyp)) / len(ref)


def _synthesize(tmp_path: Path, voice: str) -> np.ndarray:
    if not shutil.which("flite"):
        pytest.skip("flite not installed")
    out = tmp_path / "s.wav"
    subprocess.run(
        ["flite", "-voice", voice, "-t", SENTENCE.capitalize().lower(), "-o", str(out)], check=True
    )
    from model.audio import load_audio

    audio = load_audio(out, 16000).astype(np.float32)
    return audio + np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32) * 1e-3


def test_layout_and_size() -> None:
    for name in ("config.json", "model.safetensors", "vocab.json", "preprocessor_config.json", "README.md"):
        assert (MODEL_DIR / name).exists(), name
    assert (MODEL_DIR / "model.safetensors").stat().st_size <= 30 * 2**20
    vocab = json.loads((MODEL_DIR / "vocab.json").read_text())
    assert vocab["<pad>"] == 0 and vocab["|"] == 4 and set("ABCDEFGHIJKLMNOPQRSTUVWXYZ'") <= set(vocab)


def test_ours_and_transformers_agree() -> None:
    transformers = pytest.importorskip("transformers")
    from model import Wav2Vec2ConformerForCTC
    from model.audio import load_audio

    ours = Wav2Vec2ConformerForCTC.from_pretrained(MODEL_DIR).eval()
    theirs = transformers.Wav2Vec2ConformerForCTC.from_pretrained(str(MODEL_DIR)).eval()
    speech = load_audio(Path(__file__).parent / "data" / "hello_world.wav", 16000).astype(np.float32)
    x = torch.from_numpy((speech - speech.mean()) / speech.std())[None]
    with torch.no_grad():
        a, b = ours(x).logits, theirs(x).logits
    assert a.shape == b.shape
    # fp32 rounding grows with the logits' scale (|logit| ~ 20 for a trained model): relative bound
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max()) + 1e-5
    assert torch.equal(a.argmax(-1), b.argmax(-1))


@pytest.mark.parametrize("voice", ["rms", "kal16"])  # rms: a speaker never heard in training
def test_transcribes_synthesized_sentence(tmp_path, voice) -> None:
    from model.training import decoding, evaluation

    model, vocab = evaluation.load_model(MODEL_DIR)
    audio = _synthesize(tmp_path, voice)
    text = decoding.GreedyDecoder(vocab).decode(evaluation.log_probs(model, audio)).text
    assert _cer(SENTENCE, text) <= MAX_CER[voice], text


# What decides the weights' shapes and the computation; dropout and SpecAugment only shape training.
ARCHITECTURE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "conv_bias",
    "conv_depthwise_kernel_size",
    "feat_extract_norm",
    "do_stable_layer_norm",
    "position_embeddings_type",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
)


@pytest.mark.parametrize(
    "config_name",
    [
        "en-small.toml",
        "en-small-continue.toml",
        "en-small-stage3.toml",
        "en-small-stage4.toml",
        "en-small-stage5.toml",
    ],
)
def test_training_configs_describe_the_shipped_model(config_name: str) -> None:
    """The model card's reproduce commands train this very architecture."""
    from model.training.trainer import TrainConfig, model_config

    configs = Path(__file__).resolve().parents[1] / "model" / "training" / "configs"
    expected = model_config(TrainConfig.from_toml(configs / config_name))
    shipped = json.loads((MODEL_DIR / "config.json").read_text())
    for key in ARCHITECTURE_KEYS:
        value = expected[key]
        assert shipped[key] == (list(value) if isinstance(value, tuple) else value), key
