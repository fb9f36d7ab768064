"""``conformer-streamer transcribe --grammar/--hotword`` and ``transcribe_file(grammar=...)`` with the
embedded model on the ALSA announcements (``tests/data/alsa``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from streamer import cli

ALSA = Path(__file__).parent / "data" / "alsa"
PHRASES = [
    "FRONT LEFT",
    "FRONT CENTER",
    "FRONT RIGHT",
    "REAR LEFT",
    "REAR CENTER",
    "REAR RIGHT",
    "SIDE LEFT",
    "SIDE RIGHT",
]


def test_transcribe_with_a_grammar_file(tmp_path, capsys) -> None:
    grammar = tmp_path / "channels.txt"
    grammar.write_text("# the speaker-test channels\n" + "\n".join(p.lower() for p in PHRASES) + "\n\n")
    files = [str(ALSA / f"alsa_{name}.wav") for name in ("rear_left", "side_left", "rear_center")]
    assert cli.main(["transcribe", "--decoder", "greedy", "--grammar", str(grammar), "--json", *files]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in records] == ["REAR LEFT", "SIDE LEFT", "REAR CENTER"]
    for record in records:
        assert " ".join(w["word"] for w in record["words"]) == record["text"]
        assert all(0 <= w["start"] < w["end"] <= 1.6 and 0 < w["confidence"] <= 1 for w in record["words"])


def test_transcribe_refuses_a_bad_grammar_at_startup(tmp_path, capsys) -> None:
    grammar = tmp_path / "bad.txt"
    grammar.write_text("front left\nzürich\n")
    assert cli.main(["transcribe", "--grammar", str(grammar), str(ALSA / "alsa_rear_left.wav")]) == 2
    assert "'ü'" in capsys.readouterr().err


def test_transcribe_file_api_grammar_and_hotwords() -> None:
    pytest.importorskip("pyctcdecode")
    from streamer.commands.transcribe import load_recognizer, transcribe_file

    recognizer = load_recognizer()
    wav = ALSA / "alsa_side_left.wav"
    assert transcribe_file(wav, recognizer, grammar=PHRASES).text == "SIDE LEFT"
    unknown = transcribe_file(wav, recognizer, grammar=["one", "two", "three"]).text
    assert unknown in ("[unk]", "ONE", "TWO", "THREE")
    # hotwords steer the open-vocabulary beam search towards the boosted words
    boosted = transcribe_file(wav, recognizer, decoder="beam", hotwords=["SIDE:30", "LEFT:30"]).text
    # only the first word is checked: pyctcdecode boosts word prefixes too, so LEFT may come out cut short
    assert boosted.split()[0] == "SIDE", boosted


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COMMANDS = ["turn on the light", "turn off the light", "open the door", "close the door", "stop"]


@pytest.mark.xfail(
    strict=True,
    reason="the shipped model reads most channel announcements as a digit (REAR RIGHT -> EIGHT) with the "
    "garbage penalty chosen on training material; a penalty low enough for them turns half of the held-out "
    'in-grammar words into [unk] (docs/RESULTS.md, "Grammars")',
)
def test_out_of_grammar_speech_is_unk_or_unconfident() -> None:
    """The channel announcements against a digits grammar: never a digit with a high confidence (0.9).

    The garbage penalty counts the speech frames only (docs/RESULTS.md, "Grammars")."""
    from streamer.commands.transcribe import load_recognizer, transcribe_file

    recognizer = load_recognizer()
    for wav in sorted(ALSA.glob("alsa_*.wav")):
        result = transcribe_file(wav, recognizer, grammar=DIGITS)
        assert result.text == "[unk]" or result.words[0].confidence < 0.9, (wav.name, result)


@pytest.mark.skipif(not shutil.which("flite"), reason="flite is installed by scripts/setup.sh test")
def test_digits_and_commands_by_a_held_out_voice(tmp_path) -> None:
    """flite's rms voice was never heard in training; digits and commands from a 15-phrase grammar.
    Measured: 6 of the first 7 right, THREE comes out [unk] (the garbage path wins)."""
    from model.audio import load_audio
    from streamer.commands.transcribe import load_recognizer, transcribe_audio

    recognizer = load_recognizer()
    spoken = ["three", "seven", "zero", "nine", "turn off the light", "open the door", "stop", "two"]
    right = 0
    texts = []
    for k, phrase in enumerate(spoken):
        path = tmp_path / f"{k}.wav"
        subprocess.run(["flite", "-voice", "rms", "-t", phrase, "-o", str(path)], check=True, timeout=60)
        text = transcribe_audio(load_audio(path, 16000), recognizer, grammar=DIGITS + COMMANDS).text
        texts.append(text)
        right += text == phrase.upper()
    assert right >= 6, list(zip(spoken, texts, strict=True))
    assert all(t in (*[p.upper() for p in DIGITS + COMMANDS], "[unk]") for t in texts)


def test_engine_hotwords_steer_the_finals() -> None:
    """Per-stream hotwords reach the finals' beam search (the LM alone reads SIDE LEFT as SO LATE)."""
    pytest.importorskip("pyctcdecode")
    from model.audio import load_audio
    from streamer.config import Settings
    from streamer.engine import RecognitionEngine

    engine = RecognitionEngine(Settings())
    if engine.beam is None:
        pytest.skip("the finals are greedy here (no lm extra)")
    audio = load_audio(ALSA / "alsa_side_left.wav", 16000)
    options = engine.decoding_options(
        hotwords=[{"phrase": "side", "boost": 30}, {"phrase": "left", "boost": 30}]
    )
    boosted, plain = engine.transcribe(audio, decoding=options).text, engine.transcribe(audio).text
    assert boosted.split()[0] == "SIDE" and boosted != plain, (boosted, plain)
