"""Checkpoint I/O: transformers <-> ours in both directions, key forms, prefixes, hub cache lookup."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import model as ours_lib
from model.hub import hub_cache_dir, resolve_model_dir

transformers = pytest.importorskip("transformers")


def _reference_ctc(tiny_model_kwargs: dict, position: str | None = "relative") -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.Wav2Vec2ConformerConfig(
        **{**tiny_model_kwargs, "position_embeddings_type": position}
    )
    model = transformers.Wav2Vec2ConformerForCTC(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model


def _audio() -> torch.Tensor:
    return torch.randn(2, 400, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("position", [None, "relative", "rotary"], ids=str)
def test_transformers_checkpoint_loads_and_ours_loads_in_transformers(
    position: str | None, tiny_model_kwargs: dict, tmp_path: Path
) -> None:
    reference = _reference_ctc(tiny_model_kwargs, position)
    reference.save_pretrained(tmp_path / "hf")
    ours = ours_lib.Wav2Vec2ConformerForCTC.from_pretrained(tmp_path / "hf", strict=True)
    assert not ours.training
    with torch.no_grad():
        expected = reference(_audio()).logits
        assert (ours(_audio()).logits - expected).abs().max() <= 1e-5

    ours.save_pretrained(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["architectures"] == ["Wav2Vec2ConformerForCTC"]
    assert config["model_type"] == "wav2vec2-conformer"
    assert config["dtype"] == config["torch_dtype"] == "float32"
    assert set(load_file(tmp_path / "ours" / "model.safetensors")) == set(reference.state_dict())
    back = transformers.Wav2Vec2ConformerForCTC.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert (back(_audio()).logits - expected).abs().max() <= 1e-5


def test_legacy_weight_norm_keys_and_pytorch_bin(tiny_model_kwargs: dict, tmp_path: Path) -> None:
    reference = _reference_ctc(tiny_model_kwargs)
    reference.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    legacy = {
        key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): value
        for key, value in state.items()
    }
    assert any(key.endswith("weight_g") for key in legacy)
    (tmp_path / "model.safetensors").unlink()
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    ours = ours_lib.Wav2Vec2ConformerForCTC.from_pretrained(tmp_path, strict=True)
    conv = ours.wav2vec2_conformer.encoder.pos_conv_embed.conv
    reference_conv = reference.wav2vec2_conformer.encoder.pos_conv_embed.conv
    assert torch.equal(conv.weight, reference_conv.weight)
    with torch.no_grad():
        assert (ours(_audio()).logits - reference(_audio()).logits).abs().max() <= 1e-5


def test_base_and_head_prefixes_both_ways(tiny_model_kwargs: dict, tmp_path: Path, caplog) -> None:
    reference = _reference_ctc(tiny_model_kwargs)
    reference.save_pretrained(tmp_path / "head")
    reference.wav2vec2_conformer.save_pretrained(tmp_path / "base")

    base = ours_lib.Wav2Vec2ConformerModel.from_pretrained(tmp_path / "head", strict=True)
    assert base.load_report.ignored_head_keys == ["lm_head.bias", "lm_head.weight"]
    with torch.no_grad():
        expected = reference.wav2vec2_conformer(_audio()).last_hidden_state
        assert (base(_audio()).last_hidden_state - expected).abs().max() <= 1e-5

    with caplog.at_level(logging.WARNING, logger="model.checkpoint"):
        head = ours_lib.Wav2Vec2ConformerForCTC.from_pretrained(tmp_path / "base")
    assert sorted(head.load_report.missing) == ["lm_head.bias", "lm_head.weight"]
    assert "lm_head.weight" in caplog.text
    assert head.lm_head.weight.abs().sum() > 0  # initialised, not left empty
    with torch.no_grad():
        assert (head.wav2vec2_conformer(_audio()).last_hidden_state - expected).abs().max() <= 1e-5
    with pytest.raises(RuntimeError, match="lm_head"):
        ours_lib.Wav2Vec2ConformerForCTC.from_pretrained(tmp_path / "base", strict=True)


def test_unexpected_and_mismatched_keys_are_reported(tiny_model_kwargs: dict, tmp_path: Path) -> None:
    ours_lib.Wav2Vec2ConformerForCTC(ours_lib.Wav2Vec2ConformerConfig(**tiny_model_kwargs)).save_pretrained(
        tmp_path
    )
    state = load_file(tmp_path / "model.safetensors")
    state["wav2vec2_conformer.extra.weight"] = torch.zeros(3)
    state["lm_head.bias"] = torch.zeros(5)
    save_file(state, tmp_path / "model.safetensors")
    model = ours_lib.Wav2Vec2ConformerForCTC.from_pretrained(tmp_path)
    report = model.load_report
    assert report.unexpected == ["wav2vec2_conformer.extra.weight"]
    assert report.mismatched and report.mismatched[0].startswith("lm_head.bias")
    assert model.lm_head.bias.shape == (12,)
    with pytest.raises(RuntimeError):
        ours_lib.Wav2Vec2ConformerForCTC.from_pretrained(tmp_path, strict=True)


def test_dtype_and_load_pretrained_picks_head(tiny_model_kwargs: dict, tmp_path: Path) -> None:
    config = ours_lib.Wav2Vec2ConformerConfig(**tiny_model_kwargs)
    ours_lib.Wav2Vec2ConformerForSequenceClassification(config).save_pretrained(tmp_path)
    loaded = ours_lib.load_pretrained(tmp_path, dtype=torch.bfloat16)
    assert type(loaded) is ours_lib.Wav2Vec2ConformerForSequenceClassification
    assert loaded.dtype == torch.bfloat16
    assert ours_lib.load_pretrained(tmp_path, dtype="auto").dtype == torch.float32


def _fake_hub_repo(cache: Path, repo_id: str, source: Path, revision: str = "abc123") -> Path:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in source.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_hub_id_resolves_from_local_cache(tiny_model_kwargs: dict, tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "source"
    _reference_ctc(tiny_model_kwargs).save_pretrained(source)
    cache = tmp_path / "cache"
    snapshot = _fake_hub_repo(cache, "facebook/wav2vec2-conformer-rel-pos-large-960h-ft", source)
    (cache / "models--facebook--wav2vec2-conformer-rel-pos-large-960h-ft" / "snapshots" / "old").mkdir()

    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert hub_cache_dir() == tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert hub_cache_dir() == cache
    assert resolve_model_dir("facebook/wav2vec2-conformer-rel-pos-large-960h-ft") == snapshot
    model = ours_lib.Wav2Vec2ConformerForCTC.from_pretrained(
        "facebook/wav2vec2-conformer-rel-pos-large-960h-ft"
    )
    assert model.config.vocab_size == 12
    with pytest.raises(FileNotFoundError, match="Hugging Face cache"):
        resolve_model_dir("facebook/not-downloaded")


def test_default_model_dir_and_empty_dir_error(tmp_path: Path) -> None:
    assert ours_lib.default_model_dir().parts[-3:] == ("model", "pretrained", "en-small")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        ours_lib.load_pretrained(tmp_path)
