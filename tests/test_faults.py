"""Faults seen from the clients: a failing model batch, SIGTERM while clients are still streaming.

(The engine-level isolation of a failing forward is in test_stream_engine.py and the single-client
SIGTERM drain in test_server_serve.py; these go through the websocket daemon with several clients.)
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench import loadgen
from bench.loadgen import AudioPlan, ServerProcess, StreamClient

pytestmark = pytest.mark.timeout(300)  # generous: CI machines may be shared and slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from streamer.server.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def babble_bytes(seconds: float, seed: int) -> bytes:
    return loadgen.babble(seconds, seed).tobytes()


async def next_event(ws, timeout: float = 20.0) -> dict:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def drain(ws, timeout: float = 30.0) -> list[dict]:
    out = []
    try:
        async with asyncio.timeout(timeout):
            async for m in ws:
                out.append(json.loads(m))
    except ConnectionClosed:
        pass
    return out


async def assert_new_stream_served(url: str, seconds: float, seed: int) -> None:
    """A new connection gets ready, then its events through ``end``, no error, and a normal close."""
    async with connect(url) as ws:
        await ws.send('{"type": "start"}')
        assert (await next_event(ws))["type"] == "ready"
        await ws.send(babble_bytes(seconds, seed) + bytes(2 * 16000))
        await ws.send('{"type": "end"}')
        rest = await drain(ws)
        assert rest and rest[-1]["type"] == "end" and "error" not in [m["type"] for m in rest], rest
        assert ws.close_code == 1000, ws.close_code


class FlakyBackend:
    """Wraps the model backend; every model call (whole windows, feature encoder, encoder on cached
    features) raises while ``armed`` is set. Anything else is the real backend's."""

    def __init__(self, real) -> None:
        self.real = real
        self.armed = threading.Event()
        self.failed_batches = 0

    def _check(self) -> None:
        if self.armed.is_set():
            self.failed_batches += 1
            raise RuntimeError("injected model failure")

    def __call__(self, batch):
        self._check()
        return self.real(batch)

    def features(self, batch):
        self._check()
        return self.real.features(batch)

    def encode(self, features):
        self._check()
        return self.real.encode(features)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.slow
def test_failing_batch_errors_its_streams_only_and_the_daemon_carries_on(model_dir):
    from streamer.engine import RecognitionEngine
    from streamer.server.testing import running_app, settings_for_tests, wait_for

    settings = settings_for_tests(model_dir)
    engine = RecognitionEngine(settings)
    flaky = FlakyBackend(engine.scheduler.backend)
    engine.scheduler.backend = flaky
    engine.start()

    async def main():
        async with running_app(settings, engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            base = f"http://127.0.0.1:{app.port}"
            async with connect(url) as healthy:
                await healthy.send('{"type": "start"}')
                assert (await next_event(healthy))["type"] == "ready"
                for k in range(0, 32000, 3200):  # 2 s, then a pause while the others fail
                    await healthy.send(babble_bytes(2.0, 1)[2 * k : 2 * (k + 3200)])
                first = await next_event(healthy)
                assert first["type"] in ("partial", "final"), first
                # the healthy stream has nothing waiting for the model before the failure starts
                assert await wait_for(
                    lambda: (
                        all(s.bridge.stream.is_idle() for s in app.sessions if s.bridge is not None)
                        and not engine.scheduler.busy
                    ),
                    10,
                )
                flaky.armed.set()
                victims = []
                for _ in range(2):
                    ws = await connect(url)
                    await ws.send('{"type": "start"}')
                    assert (await next_event(ws))["type"] == "ready"
                    victims.append(ws)
                for ws in victims:
                    await ws.send(babble_bytes(2.0, 7))
                for ws in victims:
                    messages = await drain(ws)
                    errors = [m for m in messages if m["type"] == "error"]
                    assert errors and errors[-1]["code"] == "internal" and errors[-1]["fatal"], messages
                    assert "model forward failed" in errors[-1]["message"]
                    assert ws.close_code == 1011, ws.close_code
                assert flaky.failed_batches >= 1
                flaky.armed.clear()

                # the daemon is healthy and the untouched stream carries on to its final and end
                status, body = await asyncio.to_thread(loadgen.http_get, f"{base}/healthz")
                assert status == 200, body
                await healthy.send(babble_bytes(1.5, 4))
                await healthy.send(bytes(2 * 16000))
                await healthy.send('{"type": "end"}')
                rest = await drain(healthy)
                kinds = [m["type"] for m in rest]
                assert "error" not in kinds and "final" in kinds and kinds[-1] == "end", rest
                assert healthy.close_code == 1000
            # and new streams work
            await assert_new_stream_served(url, 1.5, 5)
            _, text = await asyncio.to_thread(loadgen.http_get, f"{base}/metrics")
            metrics = loadgen.parse_metrics(text)
            assert loadgen.metric(metrics, "conformer_errors_total", code="internal") == 2
            assert loadgen.metric(metrics, "conformer_engine_up") == 1

    try:
        asyncio.run(main())
    finally:
        engine.stop(drain=False)


@pytest.mark.slow
def test_sigterm_while_clients_stream_delivers_every_final_then_exits_0(model_dir, tmp_path):
    server = ServerProcess(
        str(model_dir),
        # generous queues: on a starved CI machine the daemon may lag, but must not drop audio here
        extra=[
            "--batching.max_wait_ms",
            "5",
            "--model.threads",
            "1",
            "--limits.max_queued_s",
            "60",
            "--streaming.buffer_s",
            "90",
        ],
        log_path=tmp_path / "serve.log",
    ).start()
    clips = [loadgen.babble(1.0 + 0.3 * i, seed=i) for i in range(3)]
    url = f"ws://{server.base}/v1/stream"

    async def main():
        clients = [StreamClient(url, AudioPlan(clips, gap_s=1.0, offset=i), i) for i in range(3)]
        tasks = [asyncio.create_task(c.run(time.monotonic() + 120)) for c in clients]
        deadline = time.monotonic() + 30
        while not all(c.result.finals >= 1 and c.result.partials >= 1 for c in clients):
            assert time.monotonic() < deadline, [c.result for c in clients]
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.35)  # somewhere inside an utterance or a gap; clients keep streaming
        before = [c.result.finals for c in clients]
        sent_at_term = [c.result.audio_s for c in clients]
        t = time.monotonic()
        server.signal(signal.SIGTERM)
        assert await loadgen.wait_not_serving(server.base, 30)  # the daemon has begun draining
        late = await asyncio.wait_for(StreamClient(url, AudioPlan(clips), 9).run(time.monotonic()), 30)
        assert not late.ready, late  # refused while draining (503 or the listener already closed)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for r, n, sent in zip(results, before, sent_at_term, strict=True):
            assert r.ready and r.got_end and r.close_code == 1001, r  # finals, end, "going away"
            assert not r.errors, r
            assert r.lost_finals == 0, r
            # everything sent before SIGTERM is covered by a final (the open utterance was closed)
            assert r.finals >= n, r
            assert r.audio_s >= sent
        return time.monotonic() - t

    try:
        drain_s = asyncio.run(main())
        assert server.proc.wait(60) == 0, server.log_text()
        assert drain_s < 30
    except AssertionError:
        print(server.log_text()[-4000:])
        raise
    finally:
        server.kill()


@pytest.mark.slow
def test_new_streams_are_refused_with_1013_while_the_engine_worker_is_dead(model_dir):
    from streamer.engine import RecognitionEngine
    from streamer.server.testing import running_app, settings_for_tests, wait_for

    settings = settings_for_tests(model_dir)
    engine = RecognitionEngine(settings)
    engine.start()

    async def main():
        async with running_app(settings, engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            base = f"http://127.0.0.1:{app.port}"
            assert (await asyncio.to_thread(loadgen.http_get, f"{base}/healthz"))[0] == 200
            engine.scheduler.stop(timeout=5)  # the inference worker is gone
            assert not engine.scheduler.running
            status, body = await asyncio.to_thread(loadgen.http_get, f"{base}/healthz")
            assert status == 503 and json.loads(body)["status"] == "engine_dead", body

            async with connect(url) as ws:  # native: an error event, then 1013 "try again later"
                messages = await drain(ws, 10)
            assert [(m["type"], m["code"], m["fatal"]) for m in messages] == [("error", "unavailable", True)]
            assert "engine" in messages[0]["message"]
            assert ws.close_code == 1013 and "engine" in ws.close_reason, (ws.close_code, ws.close_reason)

            async with connect(f"ws://127.0.0.1:{app.vosk_port}/") as ws:  # vosk: the same, its dialect
                messages = await drain(ws, 10)
            assert [m.get("code") for m in messages] == ["unavailable"], messages
            assert ws.close_code == 1013 and "engine" in ws.close_reason, (ws.close_code, ws.close_reason)

            # a connection accepted while the worker was alive asks for a stream after it died: refused too
            engine.start()
            late = await connect(url)
            assert await wait_for(lambda: len(app.sessions) == 1)  # admitted
            engine.scheduler.stop(timeout=5)
            await late.send('{"type": "start"}')
            messages = await drain(late, 10)
            assert [m.get("code") for m in messages] == ["unavailable"], messages
            assert late.close_code == 1013

            _, text = await asyncio.to_thread(loadgen.http_get, f"{base}/metrics")
            metrics = loadgen.parse_metrics(text)
            assert loadgen.metric(metrics, "conformer_connections_refused_total", reason="engine_dead") == 3
            assert loadgen.metric(metrics, "conformer_errors_total", code="unavailable") == 3
            assert loadgen.metric(metrics, "conformer_engine_up") == 0

            # the worker is back: new streams are served again
            engine.start()
            status, _ = await asyncio.to_thread(loadgen.http_get, f"{base}/healthz")
            assert status == 200
            await assert_new_stream_served(url, 1.0, 3)

    try:
        asyncio.run(main())
    finally:
        engine.stop(drain=False)
