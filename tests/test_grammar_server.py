"""Grammars through a real server on 127.0.0.1 with the embedded model: the native protocol's
``grammar``/``configure`` and the vosk port's ``phrase_list``, ``words``, ``max_alternatives`` and lower case.

The recordings are the eight ALSA channel announcements (``tests/data/alsa``, copied from the evaluation
set with their licence). Issue 18 asks for 8 of 8 through each port; what a grammar can reach is bounded
by the acoustic model (exact CTC scoring of the eight phrases, ``bench/bench_grammar.py``).
"""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer.server.testing import native_finals_text, running_app, settings_for_tests

pytestmark = pytest.mark.timeout(1800)  # 16 streams of the embedded model; a busy machine is slow

ALSA = Path(__file__).parent / "data" / "alsa"
PHRASES = [p.stem.removeprefix("alsa_").replace("_", " ").upper() for p in sorted(ALSA.glob("alsa_*.wav"))]
MIN_CORRECT = 8  # of 8 (issue 18)


def pcm(name: str) -> bytes:
    with wave.open(str(ALSA / f"alsa_{name.lower().replace(' ', '_')}.wav"), "rb") as wf:
        assert wf.getframerate() == 16000 and wf.getsampwidth() == 2
        return wf.readframes(wf.getnframes())


@pytest.fixture(autouse=True)
def patient_end(monkeypatch):
    """Correctness, not speed: on a busy machine the engine may need more than the usual 30 s."""
    monkeypatch.setattr("streamer.server.session.end_timeout", lambda queued_s: 600.0)


@pytest.fixture(scope="module")
def engine():
    from streamer.engine import RecognitionEngine

    settings = settings_for_tests(None)
    settings.decoder.method = "greedy"  # grammar streams never use the LM search; saves loading it
    engine = RecognitionEngine(settings)
    engine.start()
    yield engine
    engine.stop(drain=False)


def settings():
    s = settings_for_tests(None)
    s.decoder.method = "greedy"
    s.server.vosk_reply_wait_s = 20.0  # correctness, not speed
    return s


async def vosk_session(uri: str, config: dict, audio: bytes) -> tuple[list[str], str]:
    async with connect(uri) as ws:
        await ws.send(json.dumps({"config": config}))
        replies = []
        for i in range(0, len(audio), 3200):
            await ws.send(audio[i : i + 3200])
            replies.append(await ws.recv())
        await ws.send('{"eof" : 1}')
        last = await ws.recv()
        return replies, last


def test_alsa_announcements_through_both_ports(engine) -> None:
    assert len(PHRASES) == 8

    async def main():
        async with running_app(settings(), engine) as app:
            native, vosk = {}, {}
            for phrase in PHRASES:
                native[phrase] = await native_finals_text(app.port, pcm(phrase), grammar=PHRASES)
                replies, last = await vosk_session(
                    f"ws://127.0.0.1:{app.vosk_port}",
                    {"sample_rate": 16000, "phrase_list": [p.lower() for p in PHRASES], "words": 1},
                    pcm(phrase),
                )
                texts = [json.loads(r)["text"] for r in [*replies, last] if '"text"' in r]
                vosk[phrase] = " ".join(t for t in texts if t)
                for r in replies:  # partials are prefixes of phrases of the grammar, in lower case
                    if '"partial"' in r and (p := json.loads(r)["partial"]):
                        assert p == p.lower() and any(x.lower().startswith(p) for x in PHRASES), p
            return native, vosk

    native, vosk = asyncio.run(main())
    assert sum(native[p] == p for p in PHRASES) >= MIN_CORRECT, native
    assert all(native[p] in PHRASES for p in PHRASES), native  # speech of the grammar: never [unk]
    assert {p: t.lower() for p, t in native.items()} == vosk  # same decoder, vosk's lower case


def test_vosk_words_alternatives_and_config_from_the_next_utterance(engine) -> None:
    lower = [p.lower() for p in PHRASES]

    async def main():
        async with running_app(settings(), engine) as app:
            uri = f"ws://127.0.0.1:{app.vosk_port}"
            # words 1 (the default): result with word timings and confidences, lower case
            _, last = await vosk_session(uri, {"sample_rate": 16000, "phrase_list": lower}, pcm("rear left"))
            result = json.loads(last)
            assert result["text"] == "rear left"
            assert [w["word"] for w in result["result"]] == ["rear", "left"]
            assert all(0 < w["conf"] <= 1 and w["start"] < w["end"] for w in result["result"])
            assert last.startswith('{\n  "result" : [{\n      "conf" : ')  # vosk's layout, sorted keys
            # words 0: text only
            _, last = await vosk_session(
                uri, {"sample_rate": 16000, "phrase_list": lower, "words": 0}, pcm("rear left")
            )
            assert last == '{\n  "text" : "rear left"\n}'
            # max_alternatives: vosk's n-best shape, best first, posteriors
            _, last = await vosk_session(
                uri, {"sample_rate": 16000, "phrase_list": lower, "max_alternatives": 3}, pcm("side left")
            )
            result = json.loads(last)
            assert list(result) == ["alternatives"]
            alternatives = result["alternatives"]
            assert len(alternatives) == 3 and alternatives[0]["text"] == "side left"
            assert [sorted(a) for a in alternatives] == [["confidence", "result", "text"]] * 3
            assert all(set(w) == {"end", "start", "word"} for w in alternatives[0]["result"])
            confidences = [a["confidence"] for a in alternatives]
            assert confidences == sorted(confidences, reverse=True) and sum(confidences) <= 1.0 + 1e-5
            assert len({a["text"] for a in alternatives}) == 3
            assert '"confidence" : 0.' in last or '"confidence" : 1.000000' in last  # %f floats

            # a config mid-utterance applies from the next utterance
            async with connect(uri) as ws:
                await ws.send(json.dumps({"config": {"sample_rate": 16000, "phrase_list": lower}}))
                # 1.48 s of speech is less than one window (chunk + look-ahead, 1.5 s): a second of silence
                # after it lets a partial show the utterance open before the client has sent everything
                audio = pcm("front left") + bytes(2 * 16000)
                sent, configured = 0, False
                while sent < len(audio):
                    await ws.send(audio[sent : sent + 3200])
                    sent += 3200
                    reply = json.loads(await ws.recv())
                    if not configured and reply.get("partial"):  # the utterance is open
                        await ws.send(json.dumps({"config": {"phrase_list": ["zero", "one", "two"]}}))
                        configured = True
                assert configured
                await ws.send('{"reset" : 1}')
                first = json.loads(await ws.recv())
                await ws.send(pcm("rear center"))
                await ws.recv()
                await ws.send('{"eof" : 1}')
                second = json.loads(await ws.recv())
            return first, second

    first, second = asyncio.run(main())
    assert first["text"] == "front left"  # the open utterance kept the list it started with
    assert second["text"] in ("zero", "one", "two", "[unk]", "")  # the next one had the new list


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"phrase_list": ["yes", ""]}, "empty phrase"),
        ({"phrase_list": ["café"]}, "vocabulary"),
        ({"phrase_list": "yes no"}, "list"),
        ({"phrase_list": ["x"] * 10_001}, "at most 10000"),
        ({"max_alternatives": -1}, "max_alternatives"),
    ],
)
def test_vosk_bad_phrase_lists_get_a_clear_error(engine, config, message) -> None:
    async def main():
        s = settings()
        s.limits.max_text_bytes = 1 << 20
        async with running_app(s, engine) as app, connect(f"ws://127.0.0.1:{app.vosk_port}") as ws:
            await ws.send(json.dumps({"config": config}))
            reply = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return reply, ws.close_code

    reply, code = asyncio.run(main())
    assert reply["code"] == "bad_message" and message in reply["error"], reply
    assert code == 1008


def test_native_grammar_configure_and_errors(engine) -> None:
    async def main():
        async with running_app(settings(), engine) as app:
            uri = f"ws://127.0.0.1:{app.port}/v1/stream"
            # configure between utterances: the second utterance is decoded with the second list
            async with connect(uri) as ws:
                await ws.send(json.dumps({"type": "start", "grammar": PHRASES, "max_alternatives": 2}))
                assert json.loads(await ws.recv())["type"] == "ready"
                await ws.send(pcm("rear left"))
                await ws.send(json.dumps({"type": "reset"}))
                await ws.send(json.dumps({"type": "configure", "grammar": ["REAR CENTER", "SIDE RIGHT"]}))
                await ws.send(pcm("rear left"))
                await ws.send(json.dumps({"type": "end"}))
                finals = [e for m in [m async for m in ws] if (e := json.loads(m))["type"] == "final"]
            errors = {}
            for start, extra in [
                ({"grammar": ["yes", " "]}, None),
                ({"grammar": ["naïve"]}, None),
                ({"grammar": "yes"}, None),
                ({"grammar": ["x"] * 10_001}, None),
                ({"hotwords": [{"phrase": "x", "boost": "big"}]}, None),
                ({}, {"type": "configure", "grammar": {"yes": 1}}),
            ]:
                async with connect(uri) as ws:
                    await ws.send(json.dumps({"type": "start", **start}))
                    if extra is not None:
                        assert json.loads(await ws.recv())["type"] == "ready"
                        await ws.send(json.dumps(extra))
                    reply = json.loads(await ws.recv())
                    errors[json.dumps(start or extra)[:40]] = (reply.get("code"), reply.get("message"))
            return finals, errors

    finals, errors = asyncio.run(main())
    # the first utterance had the first list; the second the new one (REAR LEFT is not in it: [unk])
    assert len(finals) == 2 and finals[0]["text"] == "REAR LEFT"
    assert finals[1]["text"] in ("[unk]", "REAR CENTER", "SIDE RIGHT")  # measured: [unk]
    assert len(finals[0]["alternatives"]) == 2 and finals[0]["alternatives"][0]["text"] == "REAR LEFT"
    assert [w["word"] for w in finals[0]["words"]] == ["REAR", "LEFT"]
    for key, (code, message) in errors.items():
        assert code == "bad_message" and message, (key, code, message)
    assert any("vocabulary" in m for _, m in errors.values())
    assert any("at most 10000" in m for _, m in errors.values())


def test_stream_file_client_sends_a_grammar(engine, tmp_path) -> None:
    import numpy as np

    from clients.stream_file import Session, read_phrases, stream_samples, stream_url

    grammar = tmp_path / "g.txt"
    grammar.write_text("\n".join(PHRASES) + "\n")
    samples = np.frombuffer(pcm("side left"), dtype="<i2").astype(np.float32) / 32768

    async def main():
        async with running_app(settings(), engine) as app:
            session = Session(url=stream_url(f"ws://127.0.0.1:{app.port}"), grammar=read_phrases(grammar))
            async with session:
                await stream_samples(session, samples)
            return session.finals

    finals = asyncio.run(main())
    assert [f["text"] for f in finals if f["text"]] == ["SIDE LEFT"]
