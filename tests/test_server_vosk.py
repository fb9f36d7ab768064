"""The vosk-server compatible endpoint, driven exactly like vosk-server's ``websocket/test.py``.

test.py: ``{ "config" : { "sample_rate" : RATE } }``, then 0.2 s binary frames each followed by one
``recv()``, then ``{"eof" : 1}`` and one more ``recv()``.
"""

from __future__ import annotations

import asyncio
import json
import re
import wave

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from streamer.server.testing import native_finals_text, running_app, settings_for_tests, wait_for

pytestmark = pytest.mark.timeout(300)

PARTIAL = re.compile(r'^\{\n  "partial" : "[^"\n]*"\n\}$')
RESULT = re.compile(
    r'^\{\n(  "result" : \[(\{\n      "conf" : \d+\.\d{6},\n      "end" : \d+\.\d{6},\n'
    r'      "start" : \d+\.\d{6},\n      "word" : "[^"\n]*"\n    \}(, )?)+\],\n)?  "text" : "[^"\n]*"\n\}$'
)


def noise_wav(path, seconds: float, seed: int, rate: int = 16000):
    rng = np.random.RandomState(seed)
    samples = (rng.randn(int(seconds * rate)) * 4000).astype("<i2")
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes(samples.tobytes())
    return path


async def vosk_test_py(uri: str, wav_path) -> tuple[list[str], str, int | None]:
    """vosk-server's websocket/test.py, returning what it prints (plus the close code)."""
    replies = []
    async with connect(uri) as websocket:
        wf = wave.open(str(wav_path), "rb")  # noqa: SIM115  (as in test.py)
        await websocket.send('{ "config" : { "sample_rate" : %d } }' % (wf.getframerate()))  # noqa: UP031
        buffer_size = int(wf.getframerate() * 0.2)  # 0.2 seconds of audio
        while True:
            data = wf.readframes(buffer_size)
            if len(data) == 0:
                break
            await websocket.send(data)
            replies.append(await websocket.recv())
        await websocket.send('{"eof" : 1}')
        last = await websocket.recv()
        with pytest.raises(ConnectionClosedOK):  # nothing else: the server closes
            await asyncio.wait_for(websocket.recv(), 10)
        return replies, last, websocket.close_code


def vosk_text(replies: list[str]) -> str:
    return " ".join(json.loads(r)["text"] for r in replies if '"text"' in r and json.loads(r)["text"])


def test_vosk_test_py_lockstep_and_formats(engine, model_dir, tmp_path):
    wav_path = noise_wav(tmp_path / "a.wav", 4.1, seed=21)

    async def main():
        settings = settings_for_tests(model_dir)
        settings.server.vosk_reply_wait_s = 20.0  # correctness, not speed: a busy CI machine may be slow
        async with running_app(settings, engine) as app:
            replies, last, code = await vosk_test_py(f"ws://127.0.0.1:{app.vosk_port}", wav_path)
            assert code == 1000
            assert len(replies) == 21  # exactly one reply per 0.2 s frame (20.5 frames)
            for reply in replies:
                assert PARTIAL.match(reply) or RESULT.match(reply), reply
            assert RESULT.match(last), last
            assert any(PARTIAL.match(r) and json.loads(r)["partial"] for r in replies)
            # every reply reflected the recognizer after its frame (the engine had caught up)
            assert app.metrics.vosk_late_replies.value() == 0
            # the transcript is the one the native protocol gives for the same audio, in lower case
            with wave.open(str(wav_path), "rb") as wf:
                audio = wf.readframes(wf.getnframes())
            assert vosk_text([*replies, last]) == (await native_finals_text(app.port, audio)).lower()
            assert await wait_for(lambda: engine.stats().active_streams == 0)

    asyncio.run(main())


def test_vosk_reset_eof_and_byte_exactness(engine, model_dir):
    rng = np.random.RandomState(5)
    audio = (rng.randn(16000 * 2) * 4000).astype("<i2").tobytes()

    async def main():
        async with running_app(settings_for_tests(model_dir), engine) as app:
            uri = f"ws://127.0.0.1:{app.vosk_port}"
            # eof before any audio: vosk answers an empty final result and closes
            async with connect(uri) as ws:
                await ws.send('{"eof" : 1}')
                assert await ws.recv() == '{\n  "text" : ""\n}'
                with pytest.raises(ConnectionClosedOK):
                    await ws.recv()
            # reset mid-stream: the open utterance's final result comes back, the stream goes on
            async with connect(uri) as ws:
                await ws.send('{ "config" : { "sample_rate" : 16000 } }')
                for i in range(0, len(audio), 6400):
                    await ws.send(audio[i : i + 6400])
                    assert PARTIAL.match(r := await ws.recv()) or RESULT.match(r)
                await ws.send('{"reset" : 1}')
                reset_reply = await ws.recv()
                assert RESULT.match(reset_reply) and json.loads(reset_reply)["text"]
                await ws.send('{"reset" : 1}')  # nothing open: an empty result
                assert await ws.recv() == '{\n  "text" : ""\n}'
                await ws.send(audio[:6400])
                assert PARTIAL.match(await ws.recv())
                await ws.send('{"eof" : 1}')
                assert RESULT.match(await ws.recv())
                with pytest.raises(ConnectionClosedOK):
                    await ws.recv()
            # only the byte-exact texts are commands (vosk compares the raw string)
            for text, close in (('{"eof": 1}', 1008), ("hello", 1008), ('{"config": [1]}', 1008)):
                async with connect(uri) as ws:
                    await ws.send(text)
                    with pytest.raises(ConnectionClosed):
                        reply = await ws.recv()
                        assert '"error"' in reply
                        await ws.recv()
                    assert ws.close_code == close
            # odd-length PCM
            async with connect(uri) as ws:
                await ws.send(b"\x00\x01\x02")
                assert '"bad_audio"' in await ws.recv()
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1007

    asyncio.run(main())


def test_vosk_8khz_config_and_concurrent_clients(engine, model_dir, tmp_path):
    wavs = [
        noise_wav(tmp_path / f"{i}.wav", 2.0 + 0.4 * i, seed=40 + i, rate=(8000 if i == 0 else 16000))
        for i in range(3)
    ]

    async def main():
        async with running_app(settings_for_tests(model_dir), engine) as app:
            uri = f"ws://127.0.0.1:{app.vosk_port}"
            solo = [vosk_text([*r, last]) for r, last, _ in [await vosk_test_py(uri, w) for w in wavs]]
            together = await asyncio.gather(*(vosk_test_py(uri, w) for w in wavs))
            assert [vosk_text([*r, last]) for r, last, _ in together] == solo
            assert all(code == 1000 for _, _, code in together)

    asyncio.run(main())
