"""clients.stream_file against the fake protocol server (the real-server run is in test_clients_live.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile
from test_clients_fakeserver import FakeServer

from clients import stream_file
from clients.stream_file import srt_time, stream_url, to_srt


def test_stream_url():
    assert stream_url("ws://127.0.0.1:2700") == "ws://127.0.0.1:2700/v1/stream"
    assert stream_url("ws://127.0.0.1:2700/") == "ws://127.0.0.1:2700/v1/stream"
    assert stream_url("127.0.0.1:2700") == "ws://127.0.0.1:2700/v1/stream"
    assert stream_url("https://asr.example:443") == "wss://asr.example:443/v1/stream"
    assert stream_url("ws://h:1/custom/path") == "ws://h:1/custom/path"
    assert stream_url("ws://h:1", "/v1/listen", token="a b") == "ws://h:1/v1/listen?token=a+b"
    with pytest.raises(ValueError):
        stream_url("ftp://h:1")


def test_srt_from_finals():
    assert srt_time(3725.0456) == "01:02:05,046"
    finals = [
        {"text": "hello world", "start": 0.5, "end": 1.75, "words": []},
        {"text": "", "start": 2.0, "end": 2.1},
        {"text": "second one", "start": 62.0, "end": 63.5},
    ]
    assert to_srt(finals) == (
        "1\n00:00:00,500 --> 00:00:01,750\nhello world\n\n2\n00:01:02,000 --> 00:01:03,500\nsecond one\n"
    )


def test_srt_splits_long_finals_on_word_times():
    words = [{"word": f"word{i:02d}", "start": i * 0.5, "end": i * 0.5 + 0.4} for i in range(30)]
    final = {"text": " ".join(w["word"] for w in words), "start": 0.0, "end": 15.2, "words": words}
    srt = to_srt([final], max_chars=40, line_width=20)
    cues = srt.strip().split("\n\n")
    assert len(cues) > 1
    assert cues[0].split("\n")[1].startswith("00:00:00,000 --> ")
    assert cues[-1].split("\n")[1].endswith("--> 00:00:15,200")
    for cue in cues:
        lines = cue.split("\n")[2:]
        assert 1 <= len(lines) <= 2 and all(len(line) <= 40 for line in lines)
    assert " ".join(" ".join(c.split("\n")[2:]) for c in cues) == final["text"]


@pytest.fixture(scope="module")
def wav_2500ms(tmp_path_factory):
    """2.5 s of noise at 44.1 kHz stereo: exercises the resampling and down-mixing."""
    path = tmp_path_factory.mktemp("audio") / "noise.wav"
    rng = np.random.default_rng(0)
    soundfile.write(path, (rng.standard_normal((110250, 2)) * 0.1).astype(np.float32), 44100)
    return path


def test_text_output(wav_2500ms, capsys):
    with FakeServer() as server:
        code = stream_file.main([str(wav_2500ms), "--server", server.url])
        assert server.starts[0]["sample_rate"] == 16000 and server.starts[0]["encoding"] == "pcm_s16le"
        assert server.audio_bytes == [2 * 40000]  # 2.5 s at 16 kHz s16
    out = capsys.readouterr().out
    assert code == 0
    assert out == "utterance 1\nutterance 2\nutterance 3\n"


def test_json_and_srt_to_file(wav_2500ms, tmp_path):
    with FakeServer() as server:
        assert (
            stream_file.main(
                [
                    str(wav_2500ms),
                    "--server",
                    server.url,
                    "--format",
                    "json",
                    "-o",
                    str(tmp_path / "out.jsonl"),
                ]
            )
            == 0
        )
        assert (
            stream_file.main(
                [str(wav_2500ms), "--server", server.url, "--format", "srt", "-o", str(tmp_path / "out.srt")]
            )
            == 0
        )
    events = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events] == ["final"] * 3
    assert events[2]["words"][0]["word"] == "utterance"
    srt = (tmp_path / "out.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,000\nutterance 1\n\n2\n")
    assert "3\n00:00:02,000 --> 00:00:02,500\nutterance 3\n" in srt


def test_json_with_partials(wav_2500ms, capsys):
    with FakeServer() as server:
        assert (
            stream_file.main([str(wav_2500ms), "--server", server.url, "--format", "json", "--partials"]) == 0
        )
    types = [json.loads(line)["type"] for line in capsys.readouterr().out.splitlines()]
    assert types.count("final") == 3 and types.count("partial") >= 5


def test_realtime_paces_the_upload(tmp_path, capsys):
    path = tmp_path / "one_second.flac"
    soundfile.write(path, np.zeros(16000, dtype=np.float32), 16000)
    with FakeServer() as server:
        t0 = time.monotonic()
        assert stream_file.main([str(path), "--server", server.url, "--realtime"]) == 0
        assert time.monotonic() - t0 >= 0.85
    assert capsys.readouterr().out == "utterance 1\n"


def test_fatal_server_error_exits_nonzero(wav_2500ms, capsys):
    with FakeServer(fail_after_s=1.2) as server:
        code = stream_file.main([str(wav_2500ms), "--server", server.url])
    captured = capsys.readouterr()
    assert code == 1
    assert "overload" in captured.err
    assert captured.out == "utterance 1\n"  # what was recognized before the error is still printed


def test_nonfatal_server_error_still_nonzero(wav_2500ms, capsys):
    with FakeServer(nonfatal_error_after_s=1.0) as server:
        code = stream_file.main([str(wav_2500ms), "--server", server.url])
    captured = capsys.readouterr()
    assert code == 1
    assert "server warning: overload" in captured.err
    assert captured.out.count("utterance") == 3


def test_token_and_refusal(wav_2500ms, capsys):
    with FakeServer(token="s3cret") as server:
        assert stream_file.main([str(wav_2500ms), "--server", server.url, "--token", "s3cret"]) == 0
        assert stream_file.main([str(wav_2500ms), "--server", server.url, "--token", "wrong"]) == 1
    assert "HTTP 401" in capsys.readouterr().err


def test_connection_refused_and_bad_file(tmp_path, wav_2500ms, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert stream_file.main([str(wav_2500ms), "--server", f"ws://127.0.0.1:{port}"]) == 1
    assert "cannot connect" in capsys.readouterr().err
    assert stream_file.main([str(tmp_path / "missing.wav")]) == 2
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    assert stream_file.main([str(tmp_path / "junk.wav")]) == 2
