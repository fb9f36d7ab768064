"""Processor: the two halves together, and agreement with Hugging Face's Wav2Vec2Processor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.feature_extraction import Wav2Vec2FeatureExtractor
from model.processor import Wav2Vec2Processor
from model.tokenizer import Wav2Vec2CTCTokenizer

transformers = pytest.importorskip("transformers")

VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "A": 5, "B": 6, "C": 7}


@pytest.fixture
def model_dir(tmp_path):
    processor = Wav2Vec2Processor(
        Wav2Vec2FeatureExtractor(return_attention_mask=True), Wav2Vec2CTCTokenizer(VOCAB, do_lower_case=True)
    )
    processor.save_pretrained(tmp_path)
    return tmp_path


def test_roundtrip_and_transformers_agree(model_dir):
    ours = Wav2Vec2Processor.from_pretrained(model_dir)
    theirs = transformers.Wav2Vec2Processor.from_pretrained(str(model_dir))
    rng = np.random.default_rng(1)
    audio = [rng.normal(size=n).astype(np.float32) for n in (400, 640)]
    texts = ["ab c", "cab"]
    got = ours(audio=audio, text=texts, sampling_rate=16000, padding=True, return_tensors="pt")
    expected = theirs(audio=audio, text=texts, sampling_rate=16000, padding=True, return_tensors="pt")
    assert set(got) == set(expected) == {"input_values", "attention_mask", "labels"}
    for name in got:
        assert torch.equal(got[name], expected[name]), name
    ids = torch.tensor([[0, 5, 5, 4, 6, 0], [7, 0, 7, 4, 4, 5]])
    assert ours.batch_decode(ids) == theirs.batch_decode(ids) == ["a b", "cc a"]
    # As in the reference, offsets keep the vocabulary's case; only the text is lower-cased.
    assert ours.decode(ids[0], output_word_offsets=True).word_offsets == [
        {"word": "A", "start_offset": 1, "end_offset": 3},
        {"word": "B", "start_offset": 4, "end_offset": 5},
    ]
    assert ours.frame_seconds() == pytest.approx(0.02)


def test_text_only_and_argument_errors(model_dir):
    processor = Wav2Vec2Processor.from_pretrained(model_dir)
    assert processor(text="ab")["input_ids"] == [5, 6]
    with pytest.raises(ValueError):
        processor()
    with pytest.raises(TypeError, match="bogus"):
        processor(text="a", bogus=1)
    assert json.loads((model_dir / "vocab.json").read_text()) == VOCAB
