"""Random client sessions against a live daemon (hypothesis): whatever a client sends, the server answers
with protocol messages and a documented close code, keeps serving others and frees every stream."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer.server.protocol import ERROR_CLOSE_CODES
from streamer.server.testing import make_tiny_model, running_app, settings_for_tests

pytestmark = pytest.mark.timeout(300)

DOCUMENTED_CLOSES = {1000, 1001, *(int(c) for c in ERROR_CLOSE_CODES.values())}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A daemon on its own event loop thread, for the whole module."""
    from streamer.engine import RecognitionEngine

    model_dir = make_tiny_model(tmp_path_factory.mktemp("tiny-model"))
    settings = settings_for_tests(model_dir, max_frame_bytes=8192, handshake_timeout_s=2, idle_timeout_s=2)
    engine = RecognitionEngine(settings)
    engine.start()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    holder = {}

    async def main():
        async with running_app(settings, engine) as app:
            holder["app"] = app
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(60)
    yield holder["app"], engine
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    engine.stop(drain=False)


text_messages = st.one_of(
    st.text(max_size=50),
    st.sampled_from(["start", "reset", "end", "", "bogus"]).map(lambda t: json.dumps({"type": t})),
    st.fixed_dictionaries(
        {"type": st.just("start")},
        optional={
            "sample_rate": st.one_of(st.integers(-10, 300000), st.sampled_from([8000, 16000, 44100])),
            "encoding": st.sampled_from(["pcm_s16le", "f32le", "x"]),
        },
    ).map(json.dumps),
)
binary_messages = st.one_of(
    st.binary(max_size=64),
    st.integers(1, 12000).map(
        lambda n: np.random.RandomState(n).randint(-3000, 3000, n, dtype="<i2").tobytes()
    ),
    st.sampled_from([b"", bytes(9000), np.array([np.nan, 1.0], "<f4").tobytes()]),
)
sessions = st.lists(st.one_of(text_messages, binary_messages), min_size=1, max_size=8)


async def play(port: int, script: list) -> tuple[list[dict], int | None]:
    messages: list[dict] = []
    async with connect(f"ws://127.0.0.1:{port}/v1/stream", max_size=None) as ws:
        try:
            for item in script:
                await ws.send(item)
            await ws.send(json.dumps({"type": "end"}))
        except ConnectionClosed:
            pass
        try:
            async with asyncio.timeout(10):
                async for message in ws:
                    messages.append(json.loads(message))
        except ConnectionClosed:
            pass
        return messages, ws.close_code


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(script=sessions)
def test_random_sessions_never_hurt_the_server(server, script):
    app, _engine = server
    messages, close_code = asyncio.run(play(app.port, script))
    assert close_code in DOCUMENTED_CLOSES, (close_code, messages)
    for m in messages:
        assert m["type"] in ("ready", "partial", "final", "error", "end")
        if m["type"] == "error":
            assert m["code"] in ERROR_CLOSE_CODES and m["message"]
    if close_code == 1000:
        assert messages[-1]["type"] == "end"
    elif close_code != 1001:
        assert (messages and messages[-1]["type"] == "error") or close_code == 1009
    assert app.server.is_serving() and app.engine_is_alive()


def test_after_fuzzing_everything_was_freed(server):
    app, engine = server
    deadline = asyncio.run(_wait_free(app, engine))
    assert deadline, (len(app.sessions), engine.stats().active_streams)


async def _wait_free(app, engine) -> bool:
    for _ in range(200):
        if (
            not app.sessions
            and engine.stats().active_streams == 0
            and app.metrics.streams_active.value() == 0
        ):
            return True
        await asyncio.sleep(0.05)
    return False
