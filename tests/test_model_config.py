"""Wav2Vec2ConformerConfig: same fields and defaults as transformers, lossless JSON round trips."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from model import Wav2Vec2ConformerConfig

transformers = pytest.importorskip("transformers")


def test_every_transformers_field_exists_with_the_same_default() -> None:
    reference = json.loads(transformers.Wav2Vec2ConformerConfig().to_json_string())
    ours = json.loads(Wav2Vec2ConformerConfig().to_json_string())
    for name in Wav2Vec2ConformerConfig.field_names():
        if name in reference:
            assert ours[name] == reference[name], name
    model_fields = inspect.get_annotations(transformers.Wav2Vec2ConformerConfig)
    assert len(model_fields) > 50
    assert sorted(name for name in model_fields if name not in ours) == []


def test_json_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    config = Wav2Vec2ConformerConfig(
        hidden_size=64,
        num_attention_heads=4,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_labels=4,
        my_flag=[1, 2],
    )
    path = tmp_path / "config.json"
    config.to_json_file(path)
    data = json.loads(path.read_text())
    assert data["my_flag"] == [1, 2] and data["model_type"] == "wav2vec2-conformer"
    assert data["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2", "3": "LABEL_3"}
    loaded = Wav2Vec2ConformerConfig.from_json_file(path)
    assert loaded == config
    assert loaded.my_flag == [1, 2]
    assert loaded.num_labels == 4 and loaded.id2label[3] == "LABEL_3"
    assert Wav2Vec2ConformerConfig.from_pretrained(tmp_path, num_labels=2).num_labels == 2


def test_reads_transformers_json_and_derives_properties(tmp_path: Path) -> None:
    transformers.Wav2Vec2ConformerConfig(vocab_size=40, position_embeddings_type="rotary").save_pretrained(
        tmp_path
    )
    config = Wav2Vec2ConformerConfig.from_pretrained(tmp_path)
    assert config.vocab_size == 40 and config.position_embeddings_type == "rotary"
    assert config.num_feat_extract_layers == 7
    assert config.inputs_to_logits_ratio == 320
    assert config.output_hidden_size == config.hidden_size == 768
    assert config.extra["transformers_version"] == transformers.__version__


def test_invalid_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        Wav2Vec2ConformerConfig(conv_dim=(8, 8), conv_stride=(5,), conv_kernel=(10, 3))
    with pytest.raises(ValueError, match="position_embeddings_type"):
        Wav2Vec2ConformerConfig(position_embeddings_type="absolute")


def test_every_field_is_documented_in_args() -> None:
    """Each field carries its help in the class docstring's ``Args:`` section, in declaration order."""
    doc = inspect.getdoc(Wav2Vec2ConformerConfig) or ""
    documented = re.findall(r"^    (\w+): \S", doc.split("Args:", 1)[1], flags=re.M)
    assert documented == list(Wav2Vec2ConformerConfig.field_names())
