"""``conformer-streamer transcribe --grammar/--hotword`` and ``transcribe_file(grammar=...)`` with the
embedded model on the ALSA announcements (``tests/data/alsa``)."""

from __future__ import annotations

import json
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
    assert boosted.split() == ["SIDE", "LEFT"], boosted
