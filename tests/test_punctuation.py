"""Readable finals: the punctuation/casing model (shipped in model/pretrained/punct-en), the
``punctuate`` command, the native protocol's ``format``, and the daemon (readable finals, raw vosk)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.punctuation import MARKS, Punctuator, apply_case, render, strip_format
from streamer.events import Final, Word
from streamer.readable import format_final, load_punctuator
from streamer.server.protocol import ProtocolError, parse_start

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def punctuator() -> Punctuator:
    return load_punctuator()


def fmt(punctuator: Punctuator, text: str) -> str:
    return punctuator.format_text(text)


def same_words(raw: str, formatted: str) -> bool:
    return [strip_format(t) for t in formatted.split()] == raw.lower().split()


# ------------------------------------------------------------------------------- rendering (pure)


def test_apply_case_only_changes_case():
    assert apply_case("maria", 1) == "Maria"
    assert apply_case("nasa", 2) == "NASA"
    assert apply_case("i'm", 1) == "I'm"
    assert apply_case("i", 2) == "I"  # one letter: capitalized and all caps are the same
    assert apply_case("'tis", 1) == "'Tis"
    assert apply_case("MARIA", 0) == "maria"
    assert render(["hello", "world"], [1, 0], [0, MARKS.index("?")]) == ["Hello", "world?"]


def test_strip_format_inverts_render():
    rng = random.Random(3)
    words = ["o'clock", "café", "x", "rock'n'roll", "twenty", "i'd", "ünïcode", "don't"]
    for _ in range(200):
        w = rng.choice(words)
        token = render([w], [rng.randrange(3)], [rng.randrange(len(MARKS))])[0]
        assert strip_format(token) == w


def test_training_finals_hold_sentence_boundaries():
    """One-sentence paragraphs (verses, glosses) are joined in runs, so that a training final can end a
    sentence in its middle, as the held-out text and running speech do; the words stay in order."""
    from model.training.punct_data import TRAIN_SENTENCES, consecutive, utterances

    paragraphs = [
        [f"Sentence {word} is here."] for word in ("one", "two", "three", "four", "five", "six") * 5
    ]
    finals = list(
        utterances(consecutive(paragraphs, 4), seed=1, fragment_rate=0.0, sentences_per_final=TRAIN_SENTENCES)
    )
    period = MARKS.index(".")
    assert sum(m == period for f in finals for m in f.marks[:-1]) >= 10
    assert all(f.marks[-1] == period and f.cases[0] == 1 for f in finals)
    assert [w for f in finals for w in f.words] == [w for p in paragraphs for w in p[0][:-1].lower().split()]


@pytest.mark.parametrize("single_thread_macs", [0, 96 * 96 * 5, 65536 * 4])
def test_matrix_products_in_row_blocks_equal_einsum(monkeypatch, single_thread_macs):
    """`_mm`'s row blocks (sized to keep OpenBLAS on the calling thread) give the plain product, for any
    block size, a ragged last block, a vector and a block of one row too many for BLAS (einsum)."""
    import numpy as np

    from model import punctuation

    monkeypatch.setattr(punctuation, "_SINGLE_THREAD_MACS", single_thread_macs)
    rng = np.random.default_rng(single_thread_macs)  # not the data of a product freed before (np.empty)
    for shape_a, shape_b in [
        ((64, 96), (96, 96)),
        ((29, 96), (96, 96)),
        ((3, 288), (288, 96)),
        ((96,), (96, 288)),
    ]:
        a = rng.standard_normal(shape_a, dtype=np.float32)
        b = rng.standard_normal(shape_b, dtype=np.float32)
        want = np.einsum("...i,ij->...j", a, b)
        out = punctuation._mm(a, b)
        assert out.shape == want.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("arch,layers", [("cnn", 3), ("gru", 1), ("gru", 2)])
def test_numpy_serving_matches_torch(arch, layers):
    """The daemon runs the numpy forward; it must compute what the trained torch module computes."""
    import numpy as np
    import torch

    from model.punctuation import N_GRAMS, N_LEX_FEATURES, NumpyPunctModel, PunctConfig, PunctModel

    config = PunctConfig(vocab_size=50, dim=16, hidden=24, layers=layers, char_buckets=64, arch=arch)
    torch.manual_seed(0)
    model = PunctModel(config).eval()
    served = NumpyPunctModel({k: v.numpy() for k, v in model.state_dict().items()}, config)
    for t in (1, 2, 7, 30):
        ids = torch.randint(0, 50, (1, t))
        grams = torch.randint(0, 64, (1, t, N_GRAMS))
        lex = torch.rand(1, t, N_LEX_FEATURES)
        with torch.no_grad():
            case_ref, mark_ref = model(ids, grams, lex, torch.tensor([t]))
        case, mark = served(ids[0].numpy(), grams[0].numpy(), lex[0].numpy())
        np.testing.assert_allclose(case, case_ref[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(mark, mark_ref[0].numpy(), atol=1e-5)


# --------------------------------------------------------------------------------- the model

# The shipped model is below the accuracy goals (model/pretrained/punct-en/README.md has the
# figures): the behaviour checks it does not pass yet stay as non-strict xfails and report XPASS once a
# better-trained model is dropped in.
below_goals = pytest.mark.xfail(
    reason="punct-en is below the accuracy goals (see its model card)", strict=False
)


def test_questions(punctuator):
    assert fmt(punctuator, "where did you park the car").endswith("car?")
    assert fmt(punctuator, "can you hear me at the back").endswith("back?")
    out = fmt(punctuator, "we are late why did nobody call me")
    assert out.endswith("me?") and out.startswith("We")


def test_statements_end_with_a_period(punctuator):
    out = fmt(punctuator, "thank you very much for coming today")
    assert out == "Thank you very much for coming today."


def test_sentences_split_inside_a_final(punctuator):
    out = fmt(punctuator, "the meeting is over see you all next week")
    assert out == "The meeting is over. See you all next week."


def test_lists_get_commas(punctuator):
    out = fmt(punctuator, "we need eggs milk bread and some coffee")
    assert out.startswith("We need eggs, milk, bread and some coffee"), out


@below_goals
def test_proper_names_at_start_and_inside(punctuator):
    out = fmt(punctuator, "maria and john flew to london on monday")
    assert out.split()[:3] == ["Maria", "and", "John"] and "London" in out and "Monday" in out, out
    out = fmt(punctuator, "yesterday i met elizabeth at the station in paris")
    assert "Elizabeth" in out and "Paris." in out and out.startswith("Yesterday I met"), out


def test_i_and_contractions(punctuator):
    out = fmt(punctuator, "i think i'm late and i've missed the bus i'll walk")
    tokens = [strip_format(t) for t in out.split()]
    for token, word in zip(out.split(), tokens, strict=True):
        if word in ("i", "i'm", "i've", "i'll"):
            assert token.rstrip(".,?!") in ("I", "I'm", "I've", "I'll"), out


def test_empty_input(punctuator):
    assert fmt(punctuator, "") == ""
    assert fmt(punctuator, "   ") == ""
    assert punctuator.format_words([]) == []


def test_numbers_and_apostrophes_survive(punctuator):
    raw = "it costs twenty five dollars at nine o'clock in nineteen sixty one don't you think"
    out = fmt(punctuator, raw)
    assert same_words(raw, out), out


def test_words_never_change(punctuator):
    """Random word salad (odd tokens included): the same letters in the same order, every time."""
    rng = random.Random(7)
    vocab = [
        "the",
        "a",
        "of",
        "and",
        "to",
        "in",
        "i",
        "i'm",
        "you",
        "it's",
        "maria",
        "london",
        "o'clock",
        "café",
        "rock'n'roll",
        "x",
        "q",
        "zzz",
        "what",
        "why",
        "hello",
        "ninety",
        "one",
        "two",
        "thousand",
        "nasa",
        "fbi",
        "don't",
        "we're",
    ]
    for _ in range(50):
        raw = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 40)))
        out = fmt(punctuator, raw)
        assert same_words(raw, out), (raw, out)
    # upper-case input (the raw recognizer's vocabulary) comes out with the same words
    assert same_words("HELLO WORLD", fmt(punctuator, "HELLO WORLD"))


def test_thousand_words_one_line(punctuator):
    rng = random.Random(1)
    vocab = [
        "the",
        "ship",
        "sailed",
        "on",
        "and",
        "the",
        "men",
        "were",
        "tired",
        "but",
        "no",
        "one",
        "spoke",
        "of",
        "home",
        "where",
        "are",
        "we",
        "going",
    ]
    raw = " ".join(rng.choice(vocab) for _ in range(1000))
    t = time.perf_counter()
    out = fmt(punctuator, raw)
    elapsed = time.perf_counter() - t
    assert len(out.split()) == 1000 and same_words(raw, out)
    assert out[0].isupper()
    assert elapsed < 10.0  # chunked: linear in the length (about 1 s here on a loaded 2-core machine)


def test_format_final_keeps_word_timings(punctuator):
    words = (Word("where", 0.1, 0.3, 0.9), Word("is", 0.35, 0.4, 0.8), Word("maria", 0.5, 0.9, 0.7))
    final = Final("s1", "where is maria", words, 0.0, 1.0)
    out = format_final(final, punctuator)
    assert out.text == punctuator.format_text("where is maria") and out.text.startswith("Where is")
    assert [w.word for w in out.words] == out.text.split()
    assert [strip_format(w.word) for w in out.words] == ["where", "is", "maria"]
    assert [(w.start, w.end, w.confidence) for w in out.words] == [
        (w.start, w.end, w.confidence) for w in words
    ]
    assert (out.start, out.end, out.stream_id) == (0.0, 1.0, "s1")
    empty = Final("s1", "", (), 0.0, 0.0)
    assert format_final(empty, punctuator) == empty
    # words: false -> no entries, text still formatted
    assert format_final(Final("s1", "hello there", (), 0.0, 1.0), punctuator).text.startswith("Hello there")


# --------------------------------------------------------------------------------- CLI + protocol


def test_punctuate_command_one_line_per_line(punctuator):
    stdin = "where is the station\n\ni'm going home\n" + " ".join(["word"] * 1000) + "\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "punctuate"],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout.split("\n")
    assert out[:3] == [
        punctuator.format_text("where is the station"),
        "",
        punctuator.format_text("i'm going home"),
    ]
    assert out[0].startswith("Where is the station") and out[2].startswith("I'm going home")
    assert len(out[3].split()) == 1000 and out[4:] == [""]


def test_punctuate_command_bad_model_dir(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "punctuate", "--model", str(tmp_path)],
        input="hello\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "punctuation model" in proc.stderr


def test_start_format_field():
    assert parse_start({"type": "start"}).format == "raw"
    assert parse_start({"type": "start", "format": "readable"}).format == "readable"
    for bad in ("Readable", "", 1, None, ["raw"]):
        with pytest.raises(ProtocolError) as info:
            parse_start({"type": "start", "format": bad})
        assert info.value.code == "bad_message"


# ---------------------------------------------------------------------------------- the daemon


def test_daemon_finals_readable_vosk_raw(engine, model_dir, tmp_path):
    """The same audio three ways: native raw, native readable, vosk. Readable finals are the raw ones
    formatted (same words, same timings); vosk's text is exactly the raw text."""
    from websockets.asyncio.client import connect

    from streamer.server.testing import running_app, settings_for_tests
    from tests.test_server_native import noise, stream_audio
    from tests.test_server_vosk import noise_wav, vosk_test_py, vosk_text

    wav_path = noise_wav(tmp_path / "a.wav", 4.1, seed=21)
    import wave

    with wave.open(str(wav_path), "rb") as wf:
        audio = wf.readframes(wf.getnframes())
    assert noise  # the helpers make the same kind of audio as the server tests

    async def main():
        settings = settings_for_tests(model_dir)
        settings.server.vosk_reply_wait_s = 20.0
        async with running_app(settings, engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            raw, _ = await stream_audio(url, audio, start={"type": "start", "format": "raw"})
            nice, code = await stream_audio(url, audio, start={"type": "start", "format": "readable"})
            assert code == 1000
            assert raw[0]["format"] == "raw" and nice[0]["format"] == "readable"
            raw_finals = [m for m in raw if m["type"] == "final" and m["text"]]
            nice_finals = [m for m in nice if m["type"] == "final" and m["text"]]
            assert raw_finals and len(raw_finals) == len(nice_finals)
            punctuator = load_punctuator()
            for r, n in zip(raw_finals, nice_finals, strict=True):
                assert n["text"] == punctuator.format_text(r["text"]) != r["text"]
                assert [w["word"] for w in n["words"]] == n["text"].split()
                assert [strip_format(w["word"]) for w in n["words"]] == [
                    w["word"].lower() for w in r["words"]
                ]
                assert [(w["start"], w["end"]) for w in n["words"]] == [
                    (w["start"], w["end"]) for w in r["words"]
                ]
            # partials stay raw
            assert all(m["text"] == m["text"].rstrip(".?!,") for m in nice if m["type"] == "partial")
            assert app.metrics.format_seconds.count() == len([m for m in nice if m["type"] == "final"])
            # vosk: raw, as its clients expect
            replies, last, _ = await vosk_test_py(f"ws://127.0.0.1:{app.vosk_port}", wav_path)
            assert vosk_text([*replies, last]) == " ".join(m["text"] for m in raw_finals)
            # a bad format is refused at start
            async with connect(url) as ws:
                await ws.send(json.dumps({"type": "start", "format": "pretty"}))
                reply = json.loads(await ws.recv())
                assert reply["type"] == "error" and reply["code"] == "bad_message"

    asyncio.run(main())


def test_daemon_without_readable_sends_raw(engine, model_dir):
    from streamer.server.testing import running_app, settings_for_tests
    from tests.test_server_native import noise, stream_audio

    async def main():
        settings = settings_for_tests(model_dir)
        settings.format.readable = False
        async with running_app(settings, engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            messages, _ = await stream_audio(
                url, noise(2.0, 3), start={"type": "start", "format": "readable"}
            )
            assert messages[0]["format"] == "raw"
            assert all(
                m["text"] == m["text"].lower() or not m["text"] for m in messages if m["type"] == "final"
            )

    asyncio.run(main())


def test_short_finals_format_on_the_loop_long_ones_in_a_thread(punctuator, monkeypatch):
    """Up to format.inline_max_words a final is formatted on the event loop (no thread hop); longer ones
    go to a worker thread, so that a monologue's final does not hold every stream's loop."""
    import threading

    from streamer.server import native

    ran_on: list[int] = []

    def recording(final, p):
        ran_on.append(threading.get_ident())
        return format_final(final, p)

    monkeypatch.setattr(native, "format_final", recording)

    def final_of(n: int) -> Final:
        words = tuple(Word(f"word{i % 7}", i * 0.3, i * 0.3 + 0.2, 0.9) for i in range(n))
        return Final("s1", " ".join(w.word for w in words), words, 0.0, n * 0.3)

    async def main() -> int:
        short, at_bound, long = final_of(5), final_of(8), final_of(9)
        for f in (short, at_bound, long):
            out = await native.readable_final(f, punctuator, 8)
            assert out == format_final(f, punctuator) and out.text != f.text
        await native.readable_final(short, punctuator, 0)  # 0: always in a thread
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert [t == loop_thread for t in ran_on] == [True, True, False, False]


@pytest.mark.parametrize("inline_max_words", [0, 64])
def test_daemon_sends_the_raw_final_when_formatting_fails(engine, model_dir, monkeypatch, inline_max_words):
    """A formatting bug costs the caption its polish, never the final: inline and in a thread alike."""
    from streamer.server import native
    from streamer.server.testing import running_app, settings_for_tests
    from tests.test_server_native import noise, stream_audio

    calls = []

    def broken(final, p):
        calls.append(final.text)
        raise RuntimeError("formatting bug")

    monkeypatch.setattr(native, "format_final", broken)

    async def main():
        settings = settings_for_tests(model_dir)
        settings.format.inline_max_words = inline_max_words
        async with running_app(settings, engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            audio = noise(3.0, 5)
            raw, _ = await stream_audio(url, audio, start={"type": "start", "format": "raw"})
            nice, code = await stream_audio(url, audio, start={"type": "start", "format": "readable"})
            assert code == 1000 and nice[0]["format"] == "readable"
            finals = [m["text"] for m in nice if m["type"] == "final"]
            assert finals == [m["text"] for m in raw if m["type"] == "final"]
            assert calls == finals and any(finals)  # each went through the broken model, and was sent raw
            assert not any(m["type"] == "error" for m in nice)
            assert app.metrics.format_seconds.count() == 0

    asyncio.run(main())


def test_bad_punct_model_fails_at_startup(engine, model_dir, tmp_path):
    from streamer.server.app import App
    from streamer.server.testing import settings_for_tests

    settings = settings_for_tests(model_dir)
    settings.format.punct_model = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        App(settings, engine)


# ------------------------------------------------------------------ the generated dialogue source


def _spoken(text: str) -> str:
    from model.training.text import normalize

    return normalize(text).lower()


def test_dialogue_source_holds_no_heldout_sentence():
    """The generated talk (as training reads it) shares no sentence, and no 5-word run, with the written
    held-out set or the eval/real transcripts."""
    from model.training import punct_data
    from model.training.text import EVAL_TSV, real_eval_transcripts

    heldout = [
        ln for ln in punct_data.WRITTEN_HELDOUT.read_text().splitlines() if ln.strip() and ln[0] != "#"
    ]
    if not EVAL_TSV.exists():
        pytest.skip("eval/real transcripts are not on this machine")
    heldout = [_spoken(s) for s in heldout + real_eval_transcripts()]
    assert len(heldout) > 100
    exact = set(heldout)
    grams = {tuple(w[i : i + 5]) for s in heldout if len(w := s.split()) >= 5 for i in range(len(w) - 4)}
    generated = [_spoken(s) for p in punct_data.dialogue_paragraphs() for s in p]
    assert len(generated) > 10_000
    for s in generated:
        w = s.split()
        assert s not in exact, s
        assert not any(tuple(w[i : i + 5]) in grams for i in range(len(w) - 4)), s


def test_dialogue_source_is_deterministic_and_covers_talk():
    """Same seed, same text; it holds questions, list commas, vocatives and comma-free thanks."""
    from model.training.punct_dialogue import dialogue_paragraphs

    first = [s for p in dialogue_paragraphs(300, seed=3) for s in p]
    assert first == [s for p in dialogue_paragraphs(300, seed=3) for s in p]
    assert first != [s for p in dialogue_paragraphs(300, seed=4) for s in p]
    text = " ".join(first)
    assert text.count("?") > len(first) // 5
    assert any(s.startswith(("We need", "Do we need")) and s.count(",") >= 1 for s in first)
    assert any(
        s.split()[0].rstrip(",") in ("David", "Maria", "Anna") and s.split()[0][-1] == "," for s in first
    )
    assert "Thank you very much." in first and "Hello there." in first
    assert "Thank you, very much" not in text and "Hello, there" not in text


def test_dialogue_source_rarely_splits_short_commands():
    """One- and two-word sentences that end in a period ("Let's go.", "Of course.") are rare (they made
    the model split spoken commands: "Go forward. Ten meters."), and movement commands carry their
    complement in the same sentence ("Go forward ten meters.")."""
    import re

    from model.training.punct_dialogue import dialogue_paragraphs

    lines = [s for p in dialogue_paragraphs(1500, seed=5) for s in p]
    pieces = [p.strip() for s in lines for p in re.findall(r"[^.?!]+[.?!]", s.replace("Mr.", "Mr"))]
    short = [p for p in pieces if len(p.split()) <= 2 and p.endswith(".")]
    assert 0 < len(short) < 0.05 * len(lines), (len(short), len(lines))
    joined = re.compile(r"^(Go|Move|Walk) (forward|back|ahead|left|right) [a-z ]+ (meters|steps|feet)\.$")
    assert sum(bool(joined.match(s)) for s in lines) > 20


def test_talk_dev_set_is_other_draws_and_short_finals():
    """The talk-like development set is generated with another seed than the training talk, holds
    questions and commands, and keeps only development finals of spoken length."""
    from model.training import punct_data
    from model.training.punct_data import Example

    long = Example(("word",) * 30, (0,) * 30, (0,) * 29 + (1,))
    short = Example(("go", "forward", "ten", "meters"), (1, 0, 0, 0), (0, 0, 0, 1))
    dev = punct_data.talk_dev_examples([long, short])
    assert dev == punct_data.talk_dev_examples([long, short])  # seeded
    assert short in dev and long not in dev
    assert len(dev) > 2000
    talk = [" ".join(e.words) for e in dev[:-1]]
    assert sum("?" in e.reference() for e in dev) > len(dev) // 5
    assert any(t.startswith(("go ", "turn ", "move ")) for t in talk)
    training = {" ".join(e.words) for e in punct_data.utterances(punct_data.dialogue_paragraphs(), seed=5)}
    assert sum(t not in training for t in talk) > len(talk) // 2


def test_calibration_lowers_the_period_of_a_model_that_over_splits():
    """A model whose period logit is too high inside a final gets a negative period offset."""
    import torch

    from model.punctuation import Featurizer, Lexicon, PunctConfig
    from model.training.punct_data import Example
    from model.training.punct_train import Encoded, calibrate

    class OverSplitter(torch.nn.Module):
        config = PunctConfig(vocab_size=10, dim=4, hidden=4, layers=1, char_buckets=16)

        def forward(self, ids, grams, lex, lengths):
            b, t = ids.shape
            marks = torch.zeros(b, t, len(MARKS))
            marks[..., 1] = 0.8  # a period everywhere: above "none" (0) by less than the offset grid
            for k, n in enumerate(lengths.tolist()):
                marks[k, n - 1, 1] = 5.0  # and surely at the end of a final
            return torch.zeros(b, t, 3), marks

    examples = [Example(("go", "forward", "ten", "meters"), (1, 0, 0, 0), (0, 0, 0, 1))] * 20
    config = OverSplitter.config
    data = Encoded(examples, Featurizer(["<pad>", "<unk>"], Lexicon({}), config))
    bias = calibrate(OverSplitter(), data, examples)
    assert bias[MARKS.index(".")] < -0.8


def test_dialogue_lists_have_no_oxford_comma():
    """Lists of 3+ items are written "a, b and c": held-out-style text mostly has no comma before the
    last "and", and 15% of generated lists with one taught the model to put it there."""
    import random

    from model.training.punct_dialogue import _series, dialogue_paragraphs

    for seed in range(300):
        assert _series(["eggs", "milk", "bread"], "and", random.Random(seed)) == "eggs, milk and bread"
    lines = [s for p in dialogue_paragraphs(600, seed=9) for s in p]
    lists = [s for s in lines if s.count(",") >= 2 and (" and " in s or " or " in s)]
    assert lists
    assert not any(", and " in s or ", or " in s for s in lists), [s for s in lists if ", and " in s][:3]


def _constant_logit_model(mark_logits: dict[int, float], case_logits: dict[int, float], end: int = 1):
    """A stand-in model: the given logits on every word, and a sure mark ``end`` ending each final."""
    import torch

    from model.punctuation import PunctConfig

    class Constant(torch.nn.Module):
        config = PunctConfig(vocab_size=10, dim=4, hidden=4, layers=1, char_buckets=16)

        def forward(self, ids, grams, lex, lengths):
            b, t = ids.shape
            marks, cases = torch.zeros(b, t, len(MARKS)), torch.zeros(b, t, 3)
            for m, v in mark_logits.items():
                marks[..., m] = v
            for c, v in case_logits.items():
                cases[..., c] = v
            for k, n in enumerate(lengths.tolist()):
                marks[k, n - 1, end] = 9.0
            return cases, marks

    return Constant()


def test_calibration_grid_reaches_below_minus_two():
    """A question mark over-predicted by 2.7 logits gets an offset below -2 (the old grid's edge, where
    the session-13 ? offset stopped)."""
    from model.punctuation import Featurizer, Lexicon
    from model.training.punct_data import Example
    from model.training.punct_train import Encoded, calibrate

    question = MARKS.index("?")
    others = {MARKS.index(m): -9.0 for m in ".,!"}  # out of the grid's reach: only ? can move
    model = _constant_logit_model({question: 2.7, **others}, {}, end=question)
    examples = [Example(("are", "you", "coming", "home"), (1, 0, 0, 0), (0, 0, 0, question))] * 20
    data = Encoded(examples, Featurizer(["<pad>", "<unk>"], Lexicon({}), model.config))
    bias = calibrate(model, data, examples)
    assert bias[MARKS.index("?")] < -2.7, bias


def test_case_calibration_lowers_capitals_only_when_it_helps():
    """Capitalized over-predicted by 0.6 logits on mostly lower-case words gets a negative offset; a model
    that already gets the case right keeps 0."""
    from model.punctuation import Featurizer, Lexicon
    from model.training.punct_data import Example
    from model.training.punct_train import Encoded, calibrate_case

    examples = [Example(("go", "forward", "ten", "meters"), (1, 0, 0, 0), (0, 0, 0, 1))] * 20
    over = _constant_logit_model({}, {1: 0.6})
    data = Encoded(examples, Featurizer(["<pad>", "<unk>"], Lexicon({}), over.config))
    assert calibrate_case(over, data, examples)[1] < -0.6
    right = _constant_logit_model({}, {0: 1.0})
    assert calibrate_case(right, data, examples) == (0.0, 0.0, 0.0)


def test_short_finals_are_whole_short_sentences_outside_the_short_dev_set():
    """The session-16 source: one generated line per final ("Hi, Chloe. Where ...?" is one), 1-8 words,
    each ending with a sentence mark, and none of them a final of bench/data/punct_dev_short.txt."""
    from model.training import punct_data

    examples = punct_data.short_examples(60)
    ends = {MARKS.index(m) for m in ".?!"}
    assert len(examples) > 200 and any(len(e.words) == 1 for e in examples)
    assert all(1 <= len(e.words) <= punct_data.SHORT_MAX_WORDS for e in examples)
    assert all(e.marks[-1] in ends for e in examples)
    dev = {e.words for e in punct_data.labelled_lines(punct_data.SHORT_DEV)}
    assert ("stop",) in dev and not dev & {e.words for e in examples}


def test_numpy_model_adds_the_case_offset():
    """``case_bias`` from config.json shifts the served case logits (as ``mark_bias`` shifts the marks)."""
    import numpy as np
    import torch

    from model.punctuation import NumpyPunctModel, PunctConfig, PunctModel

    config = PunctConfig(vocab_size=10, dim=4, hidden=4, layers=2, char_buckets=16, arch="cnn")
    state = {k: v.numpy() for k, v in PunctModel(config).state_dict().items()}
    shifted = PunctConfig.from_dict({**config.__dict__, "case_bias": [0.0, -1.5, 0.5]})
    ids, grams, lex = (
        np.array([2, 3, 4]),
        np.zeros((3, 6), dtype=np.int64),
        np.zeros((3, 8), dtype=np.float32),
    )
    with torch.no_grad():
        base, _ = NumpyPunctModel(state, config)(ids, grams, lex)
        moved, _ = NumpyPunctModel(state, shifted)(ids, grams, lex)
    np.testing.assert_allclose(moved - base, np.tile([0.0, -1.5, 0.5], (3, 1)), atol=1e-5)


def test_dialogue_draws_names_and_list_items_from_the_word_list():
    """Half the name and place slots hold a word-list proper noun that is never written lower case
    ("Aberdeen" yes, "Bill" no: "bill" is listed too), so the model learns the word list's capital flag
    rather than ~150 hand-written names; some lists are of word-list plurals."""
    from model.training import punct_dialogue as d

    if not d.WORDLIST.exists():
        pytest.skip("no word list on this machine")
    pool = set(d.proper_nouns())
    assert "Aberdeen" in pool and "Bill" not in pool and "Rose" not in pool
    assert all(w[0].isupper() and w[1:].islower() for w in pool)
    lines = [s for p in d.dialogue_paragraphs(400, seed=3) for s in p]
    hand = set(d.NAMES + d.CITIES + d.SURNAMES)
    words = {w.strip(",.?!").removesuffix("'s") for s in lines for w in s.split()}
    assert len((words & pool) - hand) > 200
    nouns = set(d.plural_nouns())
    assert "apples" in nouns and all(w.endswith("s") for w in nouns)
    assert any(
        s.count(",") >= 1 and len(set(s.replace(",", "").split()) & nouns - set(d.FOODS)) >= 3 for s in lines
    )


def test_dialogue_commas_after_opening_clauses_not_before_closing_ones():
    """ "If you need anything, I'll call you." but "I'll call you if you need anything."; "but" and "so"
    joining two clauses take a comma."""
    import random

    from model.training.punct_dialogue import complex_sentence

    rng = random.Random(1)
    made = [complex_sentence(rng) for _ in range(2000)]
    opening = [s for s in made if s.startswith(("When ", "If ", "Before you leave,", "However,"))]
    assert opening and all("," in s.split("?")[0] for s in opening)
    closing = [s for s in made if " if you need anything." in s or " before you leave." in s]
    assert closing and not any(", if you need" in s or ", before you leave" in s for s in closing)
    assert any(", but " in s for s in made) and any(", so " in s for s in made)


def test_dialogue_written_shapes_keep_the_old_draws():
    """The session-15 shapes: lists whose items carry their own determiner ("a kettle, two tents and some
    eggs"), short time openers without a comma ("Yesterday we ..."), a name as the first word and
    subject without a comma. They come from their own random stream: the sentences the generator drew
    before them are all still there, in order."""
    import random

    from model.training import punct_dialogue as d

    rng = random.Random(4)
    made = [d.written_sentence(rng) for _ in range(1500)]
    lists = [s for s in made if s.startswith(("We need a", "We need t", "I bought", "She ordered"))]
    assert lists and any(s.count(",") >= 1 for s in lists)
    assert not any(", and " in s or ", or " in s for s in lists)
    openers = [s for s in made if s.startswith(("Yesterday ", "Last week ", "Tomorrow "))]
    assert openers and not any(s.split()[0].endswith(",") or s.split()[1].endswith(",") for s in openers)
    subjects = [s for s in made if s.split()[1] in ("speaks", "grows", "plays", "lives", "teaches")]
    assert subjects and not any(s.split()[0].endswith(",") for s in subjects)

    with_extra = [s for p in d.dialogue_paragraphs(200, seed=6) for s in p]
    shares = d.WRITTEN_PER_STRETCH
    d.WRITTEN_PER_STRETCH = (0,)
    try:
        without = [s for p in d.dialogue_paragraphs(200, seed=6) for s in p]
    finally:
        d.WRITTEN_PER_STRETCH = shares
    assert len(with_extra) > len(without)
    it = iter(with_extra)
    assert all(any(s == t for t in it) for s in without)  # an ordered subsequence


def test_training_hides_counts_of_some_unseen_words():
    """The training featurizer sees a share of out-of-vocabulary words without their training counts,
    as the served model sees a word the training text never held; word-list flags and in-vocabulary
    words keep theirs."""
    from model.punctuation import Lexicon
    from model.training.punct_train import as_unseen

    rows = {f"w{i}": (5, 7, 0, 2) for i in range(1000)}
    rows["the"] = (900, 3, 0, 1)
    hidden = as_unseen(Lexicon(rows), ["<pad>", "<unk>", "the"], 0.3, seed=1)
    assert hidden.rows["the"] == (900, 3, 0, 1)
    dropped = [w for w in rows if hidden.rows[w] == (0, 0, 0, 2)]
    assert 200 < len(dropped) < 400
    assert all(hidden.rows[w] in (rows[w], (0, 0, 0, 2)) for w in rows)
    assert hidden.rows == as_unseen(Lexicon(rows), ["<pad>", "<unk>", "the"], 0.3, seed=1).rows


def test_capital_rule_on_finals_laid_end_to_end_matches_consistent():
    """Case calibration scores offsets with the same rule as serving (``consistent``), on many finals
    at once."""
    import numpy as np

    from model.punctuation import capital_rule, consistent

    finals = [
        (["so", "i'm", "here", "and", "you"], [0, 0, 0, 0, 2], [0, 0, 1, 0, 1]),
        (["ok", "I", "go"], [0, 2, 0], [2, 0, 1]),
        (["what", "now"], [0, 0], [0, 4]),
    ]
    expected = [c for w, cases, m in finals for c in consistent(list(w), list(cases), list(m))[0]]
    flat = lambda k: np.concatenate([np.array(f[k]) for f in finals])  # noqa: E731
    is_i = np.array([w.lower() in ("i", "i'm") for f in finals for w in f[0]])
    first = np.concatenate([np.arange(len(f[0])) == 0 for f in finals])
    assert capital_rule(flat(1), flat(2), is_i, first).tolist() == expected
    assert expected == [1, 1, 0, 1, 2, 1, 1, 0, 1, 0]


def test_a_complete_final_ends_like_a_sentence(punctuator):
    """The endpointer closed the utterance, so its last word gets ``.``, ``?`` or ``!`` (the model picks
    which); ``complete=False`` leaves the model's own choice, which may be no mark at all."""
    for text in ("stop", "thank you", "keep going", "i'm not sure", "hold on", "faster please"):
        out = fmt(punctuator, text)
        assert out[-1] in ".?!", out
        assert same_words(text, out)
    rows = [punctuator.format_text(t, complete=False) for t in ("stop", "thank you", "keep going", "hold on")]
    assert any(r[-1] not in ".?!" for r in rows), rows  # the rule, not the model, ends these


def test_end_mark_takes_the_likeliest_end_and_its_offsets():
    import numpy as np

    from model.punctuation import end_mark

    logits = np.array([9.0, 1.0, -2.0, 0.5, 0.0])  # none . , ? !: "none" is ignored at the end
    assert MARKS[end_mark(logits)] == "."
    assert MARKS[end_mark(logits, (0.0, 1.0, 0.0))] == "?"
    assert MARKS[end_mark(logits, (0.0, 0.0, 1.5))] == "!"


def test_end_calibration_raises_the_question_mark_of_a_model_that_misses_questions(monkeypatch):
    """Questions whose end the model scores as a period get a positive ``?`` end offset; a model that is
    right already keeps 0."""
    import torch

    from model.punctuation import Featurizer, Lexicon, PunctConfig
    from model.training import punct_data
    from model.training.punct_data import Example
    from model.training.punct_train import calibrate_end

    class QuestionDeaf(torch.nn.Module):
        config = PunctConfig(vocab_size=10, dim=4, hidden=4, layers=1, char_buckets=16)

        def __init__(self, question_logit: float) -> None:
            super().__init__()
            self.question_logit = question_logit

        def forward(self, ids, grams, lex, lengths):
            b, t = ids.shape
            marks = torch.zeros(b, t, len(MARKS))
            marks[..., 1] = 2.0
            for k in range(b):  # the first word's id tells a question (3) from a statement (2)
                if ids[k, 0] == 3:
                    marks[k, :, 3] = self.question_logit
            return torch.zeros(b, t, 3), marks

    question = Example(("where", "is", "it"), (1, 0, 0), (0, 0, 3))
    statement = Example(("here", "it", "is"), (1, 0, 0), (0, 0, 1))
    monkeypatch.setattr(punct_data, "whole_final_dev_examples", lambda: [question] * 5 + [statement] * 20)
    featurizer = Featurizer(["<pad>", "<unk>", "here", "where"], Lexicon({}), QuestionDeaf.config)
    deaf = calibrate_end(QuestionDeaf(1.2), featurizer)
    assert 0.8 < deaf[1] <= 2.0 and deaf[0] == 0.0
    assert calibrate_end(QuestionDeaf(3.0), featurizer)[1] == 0.0


def test_names_the_word_list_only_knows_capitalized_are_capitalized(punctuator):
    """A vocative after a comma kept its name in lower case ("Thank you, gerald."); a word ``wamerican``
    lists only capitalized and the training text never wrote lower case is a proper noun."""
    from model.punctuation import Lexicon, proper_nouns_capitalized

    assert fmt(punctuator, "thank you gerald") == "Thank you, Gerald."
    lexicon = Lexicon(
        {"gerald": (0, 0, 0, 2), "bill": (5, 3, 0, 3), "march": (0, 0, 0, 2), "park": (9, 1, 0, 1)}
    )
    words = ["gerald", "bill", "march", "park", "zyx"]
    assert proper_nouns_capitalized(words, [0, 0, 2, 0, 0], lexicon) == [1, 0, 2, 0, 0]
