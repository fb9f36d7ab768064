"""Kneser-Ney ARPA writer and the CTC decoders."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from model.training import decoding, lm
from model.training.trainer import VOCAB

SENTS = ["THE CAT SAT ON THE MAT", "THE DOG SAT ON THE LOG", "A CAT AND A DOG", "THE CAT ATE"] * 3


def _one_hot_log_probs(text: str, repeat: int = 3) -> np.ndarray:
    ids = []
    for c in text:
        ids += [VOCAB["|" if c == " " else c]] * repeat + [0]
    lp = np.full((len(ids), len(VOCAB)), -20.0, dtype=np.float32)
    lp[np.arange(len(ids)), ids] = 0.0
    return lp


def test_arpa_is_normalized(tmp_path) -> None:
    kenlm = pytest.importorskip("kenlm")
    path = lm.build_arpa(SENTS, tmp_path / "t.arpa", order=3)
    model = kenlm.Model(str(path))
    vocab = {w for s in SENTS for w in s.split()} | {"</s>"}
    for context in (["THE"], ["THE", "CAT"], ["A"]):
        state = kenlm.State()
        model.BeginSentenceWrite(state)
        for w in context:
            nxt = kenlm.State()
            model.BaseScore(state, w, nxt)
            state = nxt
        total = sum(10 ** model.BaseScore(state, w, kenlm.State()) for w in vocab)
        assert 0.98 < total <= 1.0001
    assert model.score("THE CAT SAT ON THE MAT") > model.score("MAT THE ON SAT CAT THE")


def test_pruned_arpa_keeps_every_context_and_loads_gzipped(tmp_path) -> None:
    """Pruning bigrams must keep those that are contexts of kept trigrams (kenlm refuses the file else)."""
    kenlm = pytest.importorskip("kenlm")
    sentences = ["THE CAT SAT ON THE MAT"] * 3 + ["A DOG SAT", "THE CAT RAN"]
    model = lm.build_kn(sentences, order=3, prune=(2, 2))
    bigrams, trigrams = model["probs"][1], model["probs"][2]
    assert trigrams and all(gram[:-1] in bigrams for gram in trigrams)
    assert ("A", "DOG") not in bigrams  # a singleton bigram that no kept trigram needs
    path = lm.write_arpa(model, tmp_path / "t.arpa")
    packed = tmp_path / "t.arpa.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert kenlm.Model(str(packed)).score("THE CAT SAT") == pytest.approx(
        kenlm.Model(str(path)).score("THE CAT SAT")
    )
    assert decoding.read_unigrams(packed) == decoding.read_unigrams(path)
    assert "DOG" in decoding.read_unigrams(packed)


def test_greedy_decoder_text_and_word_times() -> None:
    dec = decoding.GreedyDecoder(VOCAB)
    out = dec.decode(_one_hot_log_probs("HI YOU"), time_offset=1.0)
    assert out.text == "HI YOU"
    assert [w.word for w in out.words] == ["HI", "YOU"]
    assert 1.0 <= out.words[0].start < out.words[0].end <= out.words[1].start < out.words[1].end


def test_beam_decoder_with_lm(tmp_path) -> None:
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    path = lm.build_arpa(SENTS, tmp_path / "t.arpa", order=3)
    dec = decoding.BeamDecoder(VOCAB, path, unigrams=decoding.read_unigrams(path))
    out = dec.decode(_one_hot_log_probs("THE CAT SAT"))
    assert out.text == "THE CAT SAT"
    assert [w.word for w in out.words] == ["THE", "CAT", "SAT"]


def test_beam_decoder_reads_special_tokens_as_blank() -> None:
    """<unk>/<s> frames inside a word neither print nor split it: they decode as blank, as in greedy."""
    pytest.importorskip("pyctcdecode")
    lp = _one_hot_log_probs("CAT SAT")
    lp[3] = -20.0
    lp[3, VOCAB["<unk>"]] = 0.0  # where a blank separates the C frames from the A frames
    lp[-1] = -20.0
    lp[-1, VOCAB["<s>"]] = 0.0
    out = decoding.BeamDecoder(VOCAB, beam_width=4).decode(lp, time_offset=0.5)
    assert out.text == "CAT SAT"
    assert [w.word for w in out.words] == ["CAT", "SAT"]
    first, end = out.words[1].frames
    assert out.words[1].start == pytest.approx(0.5 + first * 0.02) and end > first


def _soft_log_probs(spec: list[tuple[str, float]]) -> np.ndarray:
    """Frames where ``char`` has probability ``p`` and blank the rest (``"_"``: a certain blank)."""
    lp = np.full((len(spec), len(VOCAB)), np.log(1e-6), dtype=np.float32)
    for t, (char, p) in enumerate(spec):
        if char == "_":
            lp[t, 0] = 0.0
        else:
            lp[t, VOCAB["|" if char == " " else char]] = np.log(p)
            lp[t, 0] = np.log(1 - p)
    return lp


def test_beam_decoder_does_not_make_words_of_unsure_frames(tmp_path) -> None:
    """A run of frames where a letter only half wins (noise) is not a word; the same letters said with
    confidence are, and an off-LM spelling yields to the LM's word under the unknown-word score."""
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    path = lm.build_arpa(SENTS, tmp_path / "t.arpa", order=3)
    unsure = [("_", 1.0)] * 3 + [c for _ in range(12) for c in (("O", 0.3), ("_", 1.0))] + [("_", 1.0)] * 3
    assert decoding.BeamDecoder(VOCAB, path).decode(_soft_log_probs(unsure)).text == ""
    assert decoding.BeamDecoder(VOCAB, path, min_word_confidence=0.0).decode(_soft_log_probs(unsure)).text
    sure = [("_", 1.0)] + [(c, 0.95) for c in "CAT"] + [("_", 1.0)]
    assert decoding.BeamDecoder(VOCAB, path).decode(_soft_log_probs(sure)).text == "CAT"
    # "COT" spelled with a fair chance of "A": an unknown word unless the LM may veto it
    cot = _soft_log_probs([("_", 1.0), ("C", 0.95), ("O", 0.85), ("T", 0.95), ("_", 1.0)])
    cot[2, VOCAB["A"]] = np.log(0.1)
    cot[2, 0] = np.log(0.05)
    loose = decoding.BeamDecoder(VOCAB, path, unknown_word_score=0.0, min_word_confidence=0.0)
    assert loose.decode(cot).text == "COT"
    assert decoding.BeamDecoder(VOCAB, path).decode(cot).text == "CAT"


def test_word_alignment_marks_each_error_once() -> None:
    from model.training.evaluation import align_words, edit_distance

    ref, hyp = ["THE", "CAT", "SAT", "ON", "THE", "MAT"], ["THE", "BAT", "SAT", "THE", "MAT", "TODAY"]
    pairs = align_words(ref, hyp)
    assert [r for r, _ in pairs if r] == ref and [h for _, h in pairs if h] == hyp
    assert sum(r != h for r, h in pairs) == edit_distance(ref, hyp) == 3
    assert ("CAT", "BAT") in pairs and ("ON", None) in pairs and (None, "TODAY") in pairs
