"""CTC tokenizer: parity with Hugging Face's Wav2Vec2CTCTokenizer, plus persistence and time helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.tokenizer import Wav2Vec2CTCTokenizer, offsets_to_seconds, seconds_per_frame

transformers = pytest.importorskip("transformers")

VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7, "'": 8, "B": 9, "O": 10}


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vocab")
    (directory / "vocab.json").write_text(json.dumps(VOCAB))
    return directory


@pytest.fixture(scope="module", params=[False, True], ids=["cased", "lower"])
def tokenizers(request, vocab_dir):
    lower = request.param
    ours = Wav2Vec2CTCTokenizer(vocab_dir / "vocab.json", do_lower_case=lower)
    theirs = transformers.Wav2Vec2CTCTokenizer(str(vocab_dir / "vocab.json"), do_lower_case=lower)
    return ours, theirs


def _random_frame_ids(rng: np.random.Generator, length: int) -> list[int]:
    """Frame-level ids shaped like CTC output: mostly blanks, runs of repeats, delimiters."""
    probabilities = np.full(len(VOCAB), 0.5 / (len(VOCAB) - 2))
    probabilities[0], probabilities[4] = 0.4, 0.1
    ids = rng.choice(len(VOCAB), size=length, p=probabilities / probabilities.sum())
    return np.repeat(ids, rng.integers(1, 4, size=length))[:length].tolist()


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_decode_with_offsets_matches_transformers(tokenizers, skip_special_tokens):
    ours, theirs = tokenizers
    rng = np.random.default_rng(7)
    for length in [0, 1, 2, 5, 30, 120] * 8:
        ids = _random_frame_ids(rng, length)
        expected = theirs.decode(
            ids, skip_special_tokens=skip_special_tokens, output_char_offsets=True, output_word_offsets=True
        )
        got = ours.decode(
            ids, skip_special_tokens=skip_special_tokens, output_char_offsets=True, output_word_offsets=True
        )
        assert got.text == expected.text, ids
        assert got.char_offsets == expected.char_offsets, ids
        assert got.word_offsets == expected.word_offsets, ids
        assert ours.decode(ids, skip_special_tokens=skip_special_tokens) == theirs.decode(
            ids, skip_special_tokens=skip_special_tokens
        )


def test_batch_decode_from_random_logits_matches_transformers(tokenizers):
    ours, theirs = tokenizers
    predicted = torch.randn(4, 50, len(VOCAB), generator=torch.Generator().manual_seed(3)).argmax(-1)
    assert ours.batch_decode(predicted) == theirs.batch_decode(predicted)
    expected = theirs.batch_decode(predicted, output_word_offsets=True)
    got = ours.batch_decode(predicted, output_word_offsets=True)
    assert got.text == expected.text
    assert got.word_offsets == expected.word_offsets
    assert got.char_offsets is None or got.char_offsets == [None] * 4


def test_known_sequence_groups_repeats_and_splits_words():
    tokenizer = Wav2Vec2CTCTokenizer(VOCAB)
    # blank, B B, blank, E, T T, |, |, A, blank, T, A A
    out = tokenizer.decode([0, 9, 9, 0, 5, 6, 6, 4, 4, 7, 0, 7], output_word_offsets=True)
    assert out.text == "BET AA"
    assert out.word_offsets == [
        {"word": "BET", "start_offset": 1, "end_offset": 7},
        {"word": "AA", "start_offset": 9, "end_offset": 12},
    ]
    assert offsets_to_seconds(out.word_offsets, seconds_per_frame()) == [
        {"word": "BET", "start": 0.02, "end": 0.14},
        {"word": "AA", "start": 0.18, "end": 0.24},
    ]


@pytest.mark.parametrize(
    "text", ["eat a bet", "EAT  A<unk>x <s> B ", " to", "a . b", "A'B|O", "", "<unk><unk>", "ta </s>"]
)
def test_encode_matches_transformers(tokenizers, text):
    ours, theirs = tokenizers
    assert ours(text) == dict(theirs(text))
    assert ours.tokenize(text) == theirs.tokenize(text)


def test_batch_encode_pads_with_blank(tokenizers):
    ours, theirs = tokenizers
    texts = ["to", "a beet"]
    assert dict(ours(texts, padding=True)) == dict(theirs(texts, padding=True))
    tensors = ours(texts, padding=True, return_tensors="pt")
    assert torch.equal(tensors["input_ids"], theirs(texts, padding=True, return_tensors="pt")["input_ids"])


def test_convert_ids_to_tokens_matches_transformers(tokenizers):
    ours, theirs = tokenizers
    ids = [0, 1, 4, 5, 10, 3]
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == theirs.convert_ids_to_tokens(
        ids, skip_special_tokens=True
    )
    assert ours.convert_ids_to_tokens(5) == "E"
    assert sorted(ours.all_special_ids) == sorted(theirs.all_special_ids)


def test_save_and_load_roundtrip_is_readable_by_transformers(tmp_path):
    tokenizer = Wav2Vec2CTCTokenizer(VOCAB, do_lower_case=True)
    tokenizer.save_pretrained(tmp_path)
    again = Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    assert again.get_vocab() == VOCAB and again.do_lower_case
    theirs = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(tmp_path))
    assert theirs.do_lower_case and theirs("a bet")["input_ids"] == again.encode("a bet")


def test_loads_transformers_saved_directory(tmp_path, vocab_dir):
    transformers.Wav2Vec2CTCTokenizer(
        str(vocab_dir / "vocab.json"), word_delimiter_token="|"
    ).save_pretrained(str(tmp_path))
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    assert tokenizer.word_delimiter_token == "|" and tokenizer.pad_token_id == 0


def test_special_tokens_missing_from_vocab_are_absent():
    tokenizer = Wav2Vec2CTCTokenizer({"<pad>": 0, "<unk>": 1, "|": 2, "A": 3})
    assert tokenizer.bos_token_id is None and tokenizer.eos_token_id is None
    assert tokenizer.vocab_size == 4
    with pytest.raises(ValueError, match="pad token"):
        Wav2Vec2CTCTokenizer({"A": 0})


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(st.integers(min_value=0, max_value=len(VOCAB) + 1), max_size=40), skip=st.booleans())
def test_decode_parity_on_arbitrary_ids(vocab_dir, ids, skip):
    ours, theirs = _cased_pair(vocab_dir)
    expected = theirs.decode(
        ids, skip_special_tokens=skip, output_char_offsets=True, output_word_offsets=True
    )
    got = ours.decode(ids, skip_special_tokens=skip, output_char_offsets=True, output_word_offsets=True)
    assert (got.text, got.char_offsets, got.word_offsets) == (
        expected.text,
        expected.char_offsets,
        expected.word_offsets,
    )


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.sampled_from(["a", "E", "t", "B", "'", " ", "  ", "<unk>", "<s>", "|", "x"])))
def test_encode_parity_on_arbitrary_text(vocab_dir, pieces):
    ours, theirs = _cased_pair(vocab_dir)
    text = "".join(pieces)
    assert ours.encode(text) == theirs(text)["input_ids"]


_PAIRS: dict = {}


def _cased_pair(vocab_dir):
    """One (ours, transformers) tokenizer pair per vocabulary directory, built once."""
    if vocab_dir not in _PAIRS:
        path = vocab_dir / "vocab.json"
        _PAIRS[vocab_dir] = (Wav2Vec2CTCTokenizer(path), transformers.Wav2Vec2CTCTokenizer(str(path)))
    return _PAIRS[vocab_dir]
