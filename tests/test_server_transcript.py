"""The text comes back right: the shipped model (``model/pretrained/en-small``) behind the daemon.

A sentence is synthesized at test time (flite kal16, else espeak-ng), streamed in real-time-sized frames over
the native protocol and over the vosk endpoint, alone and with other clients at the same time.
Skipped until the shipped model is in the checkout.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil

import pytest
from websockets.asyncio.client import connect

from streamer.server.testing import running_app, synthesize, test_settings

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SENTENCES = [
    "the weather is nice today",
    "please call me back in the morning",
    "she opened the door and walked into the room",
]
MAX_WER = 0.25


def _model_dir():
    from model import default_model_dir

    return default_model_dir()


@pytest.fixture(scope="module")
def engine():
    directory = _model_dir()
    if not (directory / "config.json").exists():
        pytest.skip(f"the shipped model is not in the checkout yet ({directory})")
    if not (shutil.which("espeak-ng") or shutil.which("flite")):
        pytest.skip("no speech synthesizer (espeak-ng or flite)")
    from streamer.engine import RecognitionEngine

    engine = RecognitionEngine(test_settings(None))
    engine.start()
    yield engine
    engine.stop(drain=False)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    return [synthesize(text, folder / f"{i}.wav").tobytes() for i, text in enumerate(SENTENCES)]


def normalize(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]+", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference), normalize(hypothesis)
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(1, len(ref))


async def native(port: int, audio: bytes) -> str:
    async with connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await ws.recv()
        for i in range(0, len(audio), 3200):  # 100 ms frames
            await ws.send(audio[i : i + 3200])
        await ws.send(json.dumps({"type": "end"}))
        finals = []
        async for message in ws:
            m = json.loads(message)
            if m["type"] == "final" and m["text"]:
                finals.append(m["text"])
        assert ws.close_code == 1000
        return " ".join(finals)


async def vosk(port: int, audio: bytes) -> str:
    texts = []
    async with connect(f"ws://127.0.0.1:{port}") as ws:
        await ws.send('{ "config" : { "sample_rate" : 16000 } }')
        for i in range(0, len(audio), 6400):  # 0.2 s frames, as vosk's test.py
            await ws.send(audio[i : i + 6400])
            reply = json.loads(await ws.recv())
            if reply.get("text"):
                texts.append(reply["text"])
        await ws.send('{"eof" : 1}')
        reply = json.loads(await ws.recv())
        if reply.get("text"):
            texts.append(reply["text"])
    return " ".join(texts)


def test_native_round_trip_text_is_right(engine, speech):
    async def main():
        async with running_app(test_settings(None), engine) as app:
            text = await native(app.port, speech[0])
            assert wer(SENTENCES[0], text) <= MAX_WER, text

    asyncio.run(main())


def test_vosk_endpoint_text_is_right(engine, speech):
    async def main():
        async with running_app(test_settings(None), engine) as app:
            text = await vosk(app.vosk_port, speech[1])
            assert wer(SENTENCES[1], text) <= MAX_WER, text

    asyncio.run(main())


def test_concurrent_clients_each_get_their_own_correct_transcript(engine, speech):
    async def main():
        async with running_app(test_settings(None), engine) as app:
            texts = await asyncio.gather(
                *(native(app.port, audio) for audio in speech), vosk(app.vosk_port, speech[2])
            )
            for reference, text in zip([*SENTENCES, SENTENCES[2]], texts, strict=True):
                assert wer(reference, text) <= MAX_WER, (reference, text)

    asyncio.run(main())
