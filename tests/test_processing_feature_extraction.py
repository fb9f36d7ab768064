"""Feature extractor: identical outputs to Hugging Face's Wav2Vec2FeatureExtractor, and persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.feature_extraction import Wav2Vec2FeatureExtractor

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def batch() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.normal(size=n) * 0.3 + 0.05).astype(np.float32) for n in (1000, 1600, 777)]


PADDING_CASES = [
    {"padding": True},
    {"padding": "longest", "pad_to_multiple_of": 128},
    {"padding": "max_length", "max_length": 2000},
    {"padding": "max_length", "max_length": 900, "truncation": True},
]


@pytest.mark.parametrize("return_attention_mask", [True, False])
@pytest.mark.parametrize("options", PADDING_CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_padded_batch_matches_transformers(batch, return_attention_mask, options):
    ours = Wav2Vec2FeatureExtractor(return_attention_mask=return_attention_mask)
    theirs = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=return_attention_mask)
    expected = theirs(batch, sampling_rate=16000, return_tensors="pt", **options)
    got = ours(batch, sampling_rate=16000, return_tensors="pt", **options)
    assert set(got) == set(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype, name
        assert torch.equal(got[name], expected[name]), name


@pytest.mark.parametrize("return_attention_mask", [None, True, False])
def test_mask_default_comes_from_config_and_call_overrides_it(batch, return_attention_mask):
    for configured in (True, False):
        ours = Wav2Vec2FeatureExtractor(return_attention_mask=configured)
        theirs = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=configured)
        kwargs = {"return_attention_mask": return_attention_mask, "padding": True, "return_tensors": "np"}
        expected = theirs(batch, sampling_rate=16000, **kwargs)
        got = ours(batch, sampling_rate=16000, **kwargs)
        assert set(got) == set(expected)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])


def test_single_waveform_and_unpadded_lists_match_transformers(batch):
    ours, theirs = Wav2Vec2FeatureExtractor(), transformers.Wav2Vec2FeatureExtractor()
    single = ours(batch[0], sampling_rate=16000, return_tensors="np")["input_values"]
    np.testing.assert_array_equal(
        single, theirs(batch[0], sampling_rate=16000, return_tensors="np")["input_values"]
    )
    assert single.shape == (1, 1000)
    unpadded = ours(batch, sampling_rate=16000, padding=False)["input_values"]
    expected = theirs(batch, sampling_rate=16000, padding=False)["input_values"]
    for got_row, expected_row in zip(unpadded, expected, strict=True):
        np.testing.assert_array_equal(got_row, expected_row)


def test_normalization_uses_only_valid_samples(batch):
    features = Wav2Vec2FeatureExtractor(return_attention_mask=True)(
        batch, sampling_rate=16000, return_tensors="np"
    )
    for row, mask, waveform in zip(features.input_values, features.attention_mask, batch, strict=True):
        valid = row[mask == 1]
        assert len(valid) == len(waveform)
        assert abs(valid.mean()) < 1e-5 and abs(valid.std() - 1) < 1e-3
        assert np.all(row[mask == 0] == 0.0)


def test_wrong_sampling_rate_is_an_error(batch):
    with pytest.raises(ValueError, match="8000"):
        Wav2Vec2FeatureExtractor()(batch, sampling_rate=8000)


def test_ragged_batch_without_padding_cannot_be_a_tensor(batch):
    with pytest.raises(ValueError, match="padding"):
        Wav2Vec2FeatureExtractor()(batch, sampling_rate=16000, padding=False, return_tensors="pt")


def test_save_and_load_roundtrip_both_ways(tmp_path):
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=False).save_pretrained(
        tmp_path / "ours"
    )
    loaded = Wav2Vec2FeatureExtractor.from_pretrained(tmp_path / "ours")
    assert loaded.return_attention_mask and not loaded.do_normalize
    theirs = transformers.Wav2Vec2FeatureExtractor.from_pretrained(str(tmp_path / "ours"))
    assert theirs.return_attention_mask and not theirs.do_normalize
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=8000).save_pretrained(str(tmp_path / "theirs"))
    assert Wav2Vec2FeatureExtractor.from_pretrained(tmp_path / "theirs").sampling_rate == 8000


def test_to_casts_only_floating_tensors(batch):
    features = Wav2Vec2FeatureExtractor(return_attention_mask=True)(
        batch, sampling_rate=16000, return_tensors="pt"
    )
    moved = features.to("cpu", torch.bfloat16)
    assert moved.input_values.dtype == torch.bfloat16
    assert moved.attention_mask.dtype == torch.int32


def test_accepts_tensors_lists_and_2d_arrays(batch):
    extractor = Wav2Vec2FeatureExtractor()
    expected = extractor(batch[:2], sampling_rate=16000, return_tensors="np")["input_values"]
    as_tensors = [torch.from_numpy(w) for w in batch[:2]]
    np.testing.assert_array_equal(extractor(as_tensors, return_tensors="np")["input_values"], expected)
    as_lists = [w.tolist() for w in batch[:2]]
    np.testing.assert_array_equal(extractor(as_lists, return_tensors="np")["input_values"], expected)
    square = np.stack([batch[0][:500], batch[1][:500]])
    assert extractor(torch.from_numpy(square), return_tensors="np")["input_values"].shape == (2, 500)
    with pytest.raises(ValueError, match="mono"):
        extractor(np.zeros((2, 3, 4)))
