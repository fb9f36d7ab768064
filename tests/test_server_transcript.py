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

from streamer.server.testing import native_finals_text, running_app, synthesize, test_settings

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SENTENCES = [
    "the weather is nice today",
    "please call me back in the morning",
    "she opened the door and walked into the room",
]
# With the default decoder (beam search with the LM that ships beside the model) the text must come back
# exactly. Greedy decoding, measured by character error rate against the sentence: en-small (see its model
# card) gets most words right, not all (measured 0.0-0.08 on these sentences with the stage-3 model of
# session 4); lower it as better models ship.
MAX_GREEDY_CER = 0.15


def _model_dir():
    from model import default_model_dir

    return default_model_dir()


@pytest.fixture(scope="module", params=["auto", "greedy"])
def engine(request):
    directory = _model_dir()
    if not (directory / "config.json").exists():
        pytest.skip(f"the shipped model is not in the checkout yet ({directory})")
    if not (shutil.which("espeak-ng") or shutil.which("flite")):
        pytest.skip("no speech synthesizer (espeak-ng or flite)")
    from streamer.engine import RecognitionEngine

    settings = test_settings(None)
    settings.decoder.method = request.param
    engine = RecognitionEngine(settings)
    if request.param == "auto" and engine.beam is None:
        pytest.skip("the lm extra (pyctcdecode, kenlm) is not installed: auto decodes greedily")
    engine.start()
    yield engine
    engine.stop(drain=False)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    return [synthesize(text, folder / f"{i}.wav").tobytes() for i, text in enumerate(SENTENCES)]


def assert_right(engine, reference: str, hypothesis: str) -> None:
    """Exact words with the beam search and the model's LM; CER within MAX_GREEDY_CER when greedy."""
    if engine.beam is not None:
        assert words(hypothesis) == words(reference)
    else:
        assert cer(reference, hypothesis) <= MAX_GREEDY_CER, hypothesis


def words(text: str) -> str:
    return " ".join(re.sub(r"[^A-Z' ]+", " ", text.upper()).split())


def cer(reference: str, hypothesis: str) -> float:
    from model.training.evaluation import error_rates

    return error_rates([words(reference)], [words(hypothesis)])["cer"]


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


@pytest.mark.parametrize("endpoint", ["native", "vosk"])
def test_round_trip_text_is_right(engine, speech, endpoint):
    async def main():
        async with running_app(test_settings(None), engine) as app:
            if endpoint == "native":
                text = await native_finals_text(app.port, speech[0], sample_rate=16000)
            else:
                text = await vosk(app.vosk_port, speech[1])
            reference = SENTENCES[0] if endpoint == "native" else SENTENCES[1]
            assert_right(engine, reference, text)

    asyncio.run(main())


def test_concurrent_clients_each_get_their_own_correct_transcript(engine, speech):
    async def main():
        async with running_app(test_settings(None), engine) as app:
            texts = await asyncio.gather(
                *(native_finals_text(app.port, audio, sample_rate=16000) for audio in speech),
                vosk(app.vosk_port, speech[2]),
            )
            for reference, text in zip([*SENTENCES, SENTENCES[2]], texts, strict=True):
                assert_right(engine, reference, text)

    asyncio.run(main())
