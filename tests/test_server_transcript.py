"""The text comes back right: the shipped model (``model/pretrained/en-small``) behind the daemon.

Sentences are synthesized at test time (flite kal16, else espeak-ng) and streamed in real-time-sized frames
over the native protocol and over the vosk endpoint, one client at a time and all at once.
Skipped until the shipped model is in the checkout.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil

import pytest
from websockets.asyncio.client import connect

from streamer.server.testing import native_finals_text, running_app, settings_for_tests, synthesize

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SENTENCES = [
    "the weather is nice today",
    "please call me back in the morning",
    "she opened the door and walked into the room",
    "the quick brown fox jumps over the lazy dog",
    "we will meet at the station at noon",
]
# The shipped model does not get every sentence right: one transcript may differ from its sentence
# (concurrent streams share model batches, and a near-tie can flip), and greedy finals are held to a
# character error rate. Lower MAX_MISSES and MAX_CER as better models ship.
MAX_MISSES = 1  # transcripts that may differ from their sentence, per test
MAX_CER = 0.15


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

    settings = settings_for_tests(None)
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


def assert_right(engine, references: list[str], hypotheses: list[str]) -> None:
    """Every sentence within MAX_CER; with the beam search and the model's LM, all but MAX_MISSES exact."""
    assert [cer(r, h) <= MAX_CER for r, h in zip(references, hypotheses, strict=True)] == [True] * len(
        references
    ), hypotheses
    if engine.beam is not None:
        exact = sum(words(r) == words(h) for r, h in zip(references, hypotheses, strict=True))
        assert exact >= len(references) - MAX_MISSES, hypotheses


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
        async with running_app(settings_for_tests(None), engine) as app:
            texts = []
            for audio in speech:  # one client at a time
                if endpoint == "native":
                    texts.append(await native_finals_text(app.port, audio, sample_rate=16000))
                else:
                    texts.append(await vosk(app.vosk_port, audio))
            assert_right(engine, SENTENCES, texts)

    asyncio.run(main())


def test_concurrent_clients_each_get_their_own_correct_transcript(engine, speech):
    async def main():
        async with running_app(settings_for_tests(None), engine) as app:
            texts = await asyncio.gather(
                *(native_finals_text(app.port, audio, sample_rate=16000) for audio in speech),
                *(vosk(app.vosk_port, audio) for audio in speech[1:3]),
            )
            assert_right(engine, [*SENTENCES, *SENTENCES[1:3]], texts)

    asyncio.run(main())
