"""The grammar decoder (``streamer/grammar.py``) against exact CTC scoring, and its input checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streamer.ctc_merge import Vocabulary
from streamer.grammar import (
    MAX_PHRASES,
    UNK,
    Grammar,
    GrammarError,
    align_words,
    check_hotwords,
    check_phrases,
    parse_hotword_arg,
    phrase_labels,
)


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    from model import Wav2Vec2CTCTokenizer, default_model_dir

    return Vocabulary.from_tokenizer(Wav2Vec2CTCTokenizer.from_pretrained(str(default_model_dir())))


def ctc_log_likelihood(log_probs: np.ndarray, labels: list[int], vocab: Vocabulary) -> float:
    """torch's CTC loss of one label sequence, special tokens folded into blank as the decoder does."""
    lp = torch.from_numpy(np.asarray(log_probs, dtype=np.float64)).clone()
    specials = [i for i in np.flatnonzero(vocab.silent) if i not in (vocab.blank_id, vocab.delimiter_id)]
    lp[:, vocab.blank_id] = torch.logsumexp(lp[:, [vocab.blank_id, *specials]], dim=1)
    lp[:, specials] = -1e30
    loss = torch.nn.functional.ctc_loss(
        lp[:, None],
        torch.tensor(labels)[None],
        torch.tensor([len(lp)]),
        torch.tensor([len(labels)]),
        blank=vocab.blank_id,
        reduction="sum",
    )
    return -float(loss)


def random_log_probs(frames: int, seed: int, sharpness: float = 3.0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(frames, 32, generator=g) * sharpness, dim=-1).numpy()


PHRASES = [
    "front left",
    "FRONT RIGHT",
    "rear left",
    "a",
    "aa",
    "abba",
    "hello world",
    "hell",
    "all",
    "ALL ALL",
]


@pytest.mark.parametrize("seed", range(4))
def test_every_phrase_scores_its_exact_ctc_likelihood_in_any_chunking(vocab, seed) -> None:
    lp = random_log_probs(70, seed, sharpness=2.0 + seed)
    grammar = Grammar(PHRASES, vocab)
    search = grammar.search()
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, 70), size=5, replace=False))
    for chunk in np.split(lp, cuts):
        search.advance(chunk)
    ours = search.scores()
    exact = [ctc_log_likelihood(lp, phrase_labels(p, vocab), vocab) for p in grammar.phrases]
    np.testing.assert_allclose(ours, exact, rtol=1e-6, atol=1e-4)
    offline = grammar.search()
    offline.advance(lp)
    np.testing.assert_allclose(offline.scores(), ours, rtol=1e-9, atol=1e-9)


def test_long_confident_utterance_does_not_underflow(vocab) -> None:
    """A model far more confident than random (log-probs down to -60) over 25 s: scores stay exact."""
    labels = phrase_labels("one two three", vocab)
    frames = np.full((1250, 32), -60.0)
    frames[:, vocab.blank_id] = 0.0
    for k, label in enumerate(labels):  # one spike per character
        frames[100 + 80 * k, :] = -60.0
        frames[100 + 80 * k, label] = 0.0
    lp = torch.log_softmax(torch.from_numpy(frames), -1).numpy()
    grammar = Grammar(["one two three", "one two tree", "one to three"], vocab)
    result = grammar.decode(lp, max_alternatives=3)
    assert result.text == "ONE TWO THREE"
    assert result.confidence > 0.99
    exact = ctc_log_likelihood(lp, labels, vocab)
    search = grammar.search()
    search.advance(lp)
    assert search.scores()[0] == pytest.approx(exact, abs=1e-3)


def test_result_posteriors_alternatives_and_best_prefix(vocab) -> None:
    grammar = Grammar(PHRASES, vocab, garbage_penalty=None)
    lp = random_log_probs(50, 7)
    result = grammar.decode(lp, max_alternatives=4)
    search = grammar.search()
    search.advance(lp)
    scores = search.scores()
    assert result.text == grammar.phrases[int(np.argmax(scores))]
    assert [a.text for a in result.alternatives] == [grammar.phrases[i] for i in np.argsort(-scores)[:4]]
    confidences = [a.confidence for a in result.alternatives]
    assert confidences == sorted(confidences, reverse=True) and 0 < sum(confidences) <= 1.0 + 1e-6
    assert result.confidence == confidences[0]
    # partial: the best node is a prefix of some phrase
    assert any(p.startswith(search.best_prefix()) for p in grammar.phrases)


def test_speech_of_a_phrase_wins_and_other_speech_is_unk(vocab) -> None:
    def spiky(text: str) -> np.ndarray:
        labels = phrase_labels(text, vocab)
        frames = np.full((20 + 6 * len(labels), 32), -12.0)
        frames[:, vocab.blank_id] = 0.0
        for k, label in enumerate(labels):
            frames[10 + 6 * k] = -12.0
            frames[10 + 6 * k, label] = 0.0
        return torch.log_softmax(torch.from_numpy(frames), -1).numpy()

    grammar = Grammar(["turn on the light", "turn off the light", "open the door"], vocab)
    assert grammar.decode(spiky("turn off the light")).text == "TURN OFF THE LIGHT"
    assert grammar.decode(spiky("turn of the light")).text == "TURN OFF THE LIGHT"  # one letter missing
    unknown = grammar.decode(spiky("what a lovely day it is"), max_alternatives=2)
    assert unknown.text == UNK and unknown.out_of_grammar
    assert unknown.alternatives[0].text == UNK and unknown.alternatives[1].confidence < 0.01
    # without the garbage path the closest phrase is forced, as vosk does without "[unk]"
    forced = Grammar(grammar.phrases, vocab, garbage_penalty=None).decode(spiky("what a lovely day it is"))
    assert forced.text in grammar.phrases


def test_align_words_splits_at_the_delimiter_in_time_order(vocab) -> None:
    labels = phrase_labels("rear center", vocab)
    frames = np.full((80, 32), -10.0)
    frames[:, vocab.blank_id] = 0.0
    for k, label in enumerate(labels):
        frames[5 + 6 * k] = -10.0
        frames[5 + 6 * k, label] = 0.0
    lp = torch.log_softmax(torch.from_numpy(frames), -1).numpy()
    words = align_words("REAR CENTER", lp, vocab, 0.02, 1.0, 0.9)
    assert [w.word for w in words] == ["REAR", "CENTER"]
    assert words[0].start == pytest.approx(1.0 + 5 * 0.02)  # the first spike
    assert words[0].end <= words[1].start < words[1].end
    assert words[1].end == pytest.approx(1.0 + (5 + 6 * 10 + 1) * 0.02)  # the last spike's frame ends
    assert all(w.confidence == 0.9 for w in words)


def test_bad_phrase_lists_are_refused_clearly(vocab) -> None:
    with pytest.raises(GrammarError, match="empty phrase"):
        check_phrases(["yes", "  "])
    with pytest.raises(GrammarError, match="list"):
        check_phrases("yes no")
    with pytest.raises(GrammarError, match="strings"):
        check_phrases(["yes", 3])
    with pytest.raises(GrammarError, match=f"at most {MAX_PHRASES}"):
        check_phrases(["x"] * (MAX_PHRASES + 1))
    with pytest.raises(GrammarError, match=r"'é'.*vocabulary"):
        Grammar(["café"], vocab)
    with pytest.raises(GrammarError, match="no phrase"):
        Grammar(["[unk]"], vocab)
    grammar = Grammar(["Yes", "yes", "YES  ", "no", "[unk]"], vocab)  # case and spacing duplicates merge
    assert grammar.phrases == ["YES", "NO"]


def test_hotword_checks(vocab) -> None:
    assert check_hotwords([{"phrase": "zelda", "boost": 5}], vocab)[0].phrase == "ZELDA"
    assert parse_hotword_arg("new york:7.5").boost == 7.5
    assert parse_hotword_arg("half:time").phrase == "half:time"  # not a number after the colon
    for bad in (
        [{"phrase": ""}],
        [{"phrase": "x", "boost": "high"}],
        "zelda",
        [{"phrase": "x", "weight": 1}],
    ):
        with pytest.raises(GrammarError):
            check_hotwords(bad, vocab)
    with pytest.raises(GrammarError, match="vocabulary"):
        check_hotwords([{"phrase": "zürich"}], vocab)


def test_protocol_parsing_of_decoding_options() -> None:
    from streamer.server.protocol import ProtocolError, parse_text, parse_vosk_text

    start = parse_text(json.dumps({"type": "start", "grammar": ["yes", "no"], "max_alternatives": 2})).start
    assert start.decoding.grammar == ("yes", "no") and start.decoding.max_alternatives == 2
    assert parse_text('{"type": "start"}').start.decoding is None
    command = parse_text(json.dumps({"type": "configure", "hotwords": [{"phrase": "zelda", "boost": 4}]}))
    assert command.type == "configure" and command.decoding.grammar is None
    assert command.decoding.hotwords[0].boost == 4.0
    for bad in (
        {"type": "start", "grammar": "yes"},
        {"type": "start", "grammar": ["yes", ""]},
        {"type": "start", "grammar": [1]},
        {"type": "configure", "grammar": ["x"] * 10_001},
        {"type": "configure", "grammar": ["x"], "sample_rate": 8000},
        {"type": "start", "max_alternatives": 1.5},
    ):
        with pytest.raises(ProtocolError) as error:
            parse_text(json.dumps(bad))
        assert error.value.code == "bad_message", bad
    config = parse_vosk_text('{"config": {"phrase_list": ["one", "two", "[unk]"], "max_alternatives": 3}}')
    assert config.phrase_list == ("one", "two", "[unk]") and config.max_alternatives == 3
    assert parse_vosk_text('{"config": {"phrase_list": null}}').phrase_list == ()
    assert parse_vosk_text('{"config": {"sample_rate": 8000}}').phrase_list is None


def test_vosk_result_lower_case_and_alternatives_layout() -> None:
    from streamer.server.protocol import vosk_partial, vosk_result

    word = {"word": "FRONT", "start": 0.1, "end": 0.4, "confidence": 0.9}
    final = {"text": "FRONT", "words": [word], "alternatives": []}
    assert vosk_partial("FRO") == '{\n  "partial" : "fro"\n}'
    assert vosk_result([final], words=False) == '{\n  "text" : "front"\n}'
    final["alternatives"] = [
        {"text": "FRONT", "confidence": 0.75, "words": [word]},
        {"text": "[unk]", "confidence": 0.25, "words": []},
    ]
    assert vosk_result([final], words=True, max_alternatives=2) == (
        '{\n  "alternatives" : [{\n      "confidence" : 0.750000,\n      "result" : [{\n'
        '          "end" : 0.400000,\n          "start" : 0.100000,\n          "word" : "front"\n'
        '        }],\n      "text" : "front"\n    }, {\n      "confidence" : 0.250000,\n'
        '      "text" : "[unk]"\n    }]\n}'
    )
    assert json.loads(vosk_result([], max_alternatives=1)) == {
        "alternatives": [{"confidence": 1.0, "text": ""}]
    }


def test_a_streamed_grammar_utterance_keeps_its_lead_frames(vocab) -> None:
    """With ``lead_frames`` the merger hands an utterance over from that many frames before its first
    letter, gated (all-blank) windows included, so the grammar scores speech the greedy labels missed."""
    from streamer.ctc_merge import CtcMerger
    from streamer.endpointing import Endpointer

    def frames(labels: list[int]) -> np.ndarray:
        lp = np.full((len(labels), len(vocab.raw_tokens)), -20.0, dtype=np.float32)
        lp[np.arange(len(labels)), labels] = 0.0
        return lp

    letter = phrase_labels("a", vocab)[0]
    blank = vocab.blank_id
    for lead in (0, 5, 40):
        merger = CtcMerger(
            vocab, frame_seconds=0.02, endpointer=Endpointer(0.2, 20.0, 0.02), keep_log_probs=True
        )
        merger.utterance.lead_frames = lead
        merger.push(frames([blank] * 10), 0, 10)
        merger.push(None, 10, 10)  # a gated window
        closed = merger.push(frames([blank] * 5 + [letter] * 3 + [blank] * 20), 20, 28)
        assert len(closed) == 1
        utterance = closed[0]
        first = max(25 - lead, 0)  # the letter starts at frame 25
        assert utterance.log_probs_start == pytest.approx(first * 0.02)
        assert len(utterance.log_probs) == 25 + 3 + 10 - first  # up to the end of the 0.2 s pause
        assert utterance.log_probs[25 - first, letter] == 0.0
        assert (utterance.log_probs[: 25 - first, blank] == 0.0).all()
