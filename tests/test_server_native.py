"""The daemon end to end on 127.0.0.1 (random free ports) with the real engine and a tiny random model.

Native protocol round trips, concurrent clients, every bad-input case (each with its error event and
close code, while a well-behaved stream on the same server carries on), limits, auth, HTTP routes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamer.server.testing import running_app, settings_for_tests, wait_for

pytestmark = pytest.mark.timeout(300)


def noise(seconds: float, seed: int, rate: int = 16000) -> bytes:
    rng = np.random.RandomState(seed)
    return (rng.randn(int(seconds * rate)) * 4000).clip(-32768, 32767).astype("<i2").tobytes()


async def collect(ws, timeout: float = 30.0) -> list[dict]:
    """Every message until the server closes the connection."""
    messages = []
    try:
        async with asyncio.timeout(timeout):
            async for message in ws:
                messages.append(json.loads(message))
    except ConnectionClosed:
        pass
    return messages


async def stream_audio(
    url: str, audio: bytes, frame: int = 6400, start: dict | None = None
) -> tuple[list, int]:
    async with connect(url) as ws:
        await ws.send(json.dumps(start or {"type": "start"}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready"
        for i in range(0, len(audio), frame):
            await ws.send(audio[i : i + frame])
        await ws.send(json.dumps({"type": "end"}))
        messages = await collect(ws)
        return [ready, *messages], ws.close_code


def finals_text(messages: list[dict]) -> str:
    return " ".join(m["text"] for m in messages if m["type"] == "final" and m["text"])


def run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------------------------ round trips


def test_round_trip_ready_partials_finals_end_close_1000(engine, model_dir):
    async def main():
        settings = settings_for_tests(model_dir)
        async with running_app(settings, engine) as app:
            messages, code = await stream_audio(f"ws://127.0.0.1:{app.port}/v1/stream", noise(3.0, 1))
            ready = messages[0]
            assert ready["version"] == 1 and ready["sample_rate"] == 16000 and ready["stream_id"]
            assert ready["model"] == engine.model_name
            kinds = [m["type"] for m in messages[1:]]
            assert kinds[-1] == "end" and code == 1000
            assert "final" in kinds and "partial" in kinds
            for m in messages[1:]:
                assert m["stream_id"] == ready["stream_id"]
                if m["type"] == "partial":
                    assert m["text"] == " ".join(t for t in (m["committed"], m["tentative"]) if t)
                if m["type"] == "final":
                    assert all(set(w) == {"word", "start", "end", "confidence"} for w in m["words"])
            assert finals_text(messages)
            # resources freed
            assert await wait_for(lambda: engine.stats().active_streams == 0)
            assert await wait_for(lambda: app.metrics.streams_active.value() == 0)

    run(main())


def test_f32le_at_48k_and_reset(engine, model_dir):
    async def main():
        async with running_app(settings_for_tests(model_dir), engine) as app:
            rng = np.random.RandomState(3)
            audio = (rng.randn(48000 * 2) * 0.12).astype("<f4").tobytes()
            async with connect(f"ws://127.0.0.1:{app.port}/v1/stream") as ws:
                await ws.send(
                    json.dumps(
                        {"type": "start", "sample_rate": 48000, "encoding": "f32le", "partials": False}
                    )
                )
                assert json.loads(await ws.recv())["type"] == "ready"
                await ws.send(audio[: len(audio) // 2])
                await ws.send(json.dumps({"type": "reset"}))
                await ws.send(audio[len(audio) // 2 :])
                await ws.send(json.dumps({"type": "end"}))
                messages = await collect(ws)
                assert ws.close_code == 1000
            kinds = [m["type"] for m in messages]
            assert "partial" not in kinds
            assert kinds.count("final") >= 2  # the reset split the audio into two utterances
            assert kinds[-1] == "end"

    run(main())


def test_concurrent_clients_each_get_their_own_transcript(engine, model_dir):
    async def main():
        async with running_app(settings_for_tests(model_dir), engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            audios = [noise(2.5 + 0.5 * i, seed=10 + i) for i in range(4)]
            solo = [finals_text((await stream_audio(url, a))[0]) for a in audios]
            assert len(set(solo)) == 4  # different audio, different text
            together = await asyncio.gather(*(stream_audio(url, a, frame=3200) for a in audios))
            for (messages, code), expected in zip(together, solo, strict=True):
                assert code == 1000
                assert finals_text(messages) == expected
                ids = {m["stream_id"] for m in messages}
                assert len(ids) == 1

    run(main())


# ---------------------------------------------------------------------------------------- bad input

BAD_CASES = {
    "malformed_json": ([b"T{not json"], "bad_json", 1007),
    "not_an_object": ([b"T[1,2,3]"], "bad_json", 1007),
    "unknown_type": ([b'T{"type": "hello"}'], "bad_message", 1008),
    "audio_before_start": ([b"B\x00\x00\x00\x00"], "not_started", 1008),
    "end_before_start": ([b'T{"type": "end"}'], "not_started", 1008),
    "absurd_sample_rate": ([b'T{"type": "start", "sample_rate": 5}'], "bad_message", 1008),
    "huge_sample_rate": ([b'T{"type": "start", "sample_rate": 1e12}'], "bad_message", 1008),
    "bad_encoding": ([b'T{"type": "start", "encoding": "opus"}'], "bad_message", 1008),
    "odd_length_pcm": ([b'T{"type": "start"}', b"B\x00\x01\x02"], "bad_audio", 1007),
    "nan_samples": (
        [b'T{"type": "start", "encoding": "f32le"}', b"B" + np.array([0.1, np.nan], "<f4").tobytes()],
        "bad_audio",
        1007,
    ),
    "inf_samples": (
        [b'T{"type": "start", "encoding": "f32le"}', b"B" + np.array([np.inf, 0], "<f4").tobytes()],
        "bad_audio",
        1007,
    ),
    "start_twice": ([b'T{"type": "start"}', b'T{"type": "start"}'], "bad_message", 1008),
    "oversized_frame": ([b'T{"type": "start"}', b"B" + bytes(70000)], "frame_too_large", 1009),
    "text_flood": ([b'T{"type": "start"}', *([b'T{"type": "reset"}'] * 200)], "flood", 1008),
    "frame_flood": ([b'T{"type": "start"}', *([b"B\x00\x00"] * 3000)], "flood", 1008),
}


async def bad_client(url: str, script: list[bytes]) -> tuple[list[dict], int | None]:
    async with connect(url, max_size=None) as ws:
        try:
            for item in script:
                kind, payload = item[:1], item[1:]
                await ws.send(payload.decode() if kind == b"T" else payload)
        except ConnectionClosed:
            pass
        messages = await collect(ws, timeout=10)
        return messages, ws.close_code


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gets_error_event_and_close_code_while_others_carry_on(engine, model_dir, case):
    script, code, close_code = BAD_CASES[case]

    async def main():
        settings = settings_for_tests(model_dir, max_frame_bytes=65536, frame_rate_per_s=500)
        async with running_app(settings, engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            bystander = asyncio.create_task(stream_audio(url, noise(2.0, 7), frame=1600))
            messages, got_close = await bad_client(url, script)
            errors = [m for m in messages if m["type"] == "error"]
            assert errors and errors[-1]["code"] == code and errors[-1]["fatal"] is True, messages
            assert errors[-1]["message"]
            assert got_close == close_code
            good, good_close = await bystander
            assert good_close == 1000 and good[-1]["type"] == "end"
            assert app.metrics.errors.value(code=code) >= 1
            assert app.server.is_serving()

    run(main())


def test_frames_far_over_the_limit_are_cut_by_the_library_with_1009(engine, model_dir):
    async def main():
        async with running_app(settings_for_tests(model_dir, max_frame_bytes=1000), engine) as app:
            _messages, close = await bad_client(
                f"ws://127.0.0.1:{app.port}/v1/stream", [b'T{"type": "start"}', b"B" + bytes(100_000)]
            )
            assert close == 1009

    run(main())


def test_timeouts_start_and_idle(engine, model_dir):
    async def main():
        settings = settings_for_tests(model_dir, handshake_timeout_s=0.5, idle_timeout_s=0.5)
        async with running_app(settings, engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            async with connect(url) as ws:  # never sends start
                t0 = time.monotonic()
                messages = await collect(ws, timeout=20)
                assert messages[-1]["code"] == "start_timeout" and ws.close_code == 1008
                assert time.monotonic() - t0 < 15
            async with connect(url) as ws:  # starts, then goes quiet
                await ws.send(json.dumps({"type": "start"}))
                await ws.send(noise(0.3, 2))
                messages = await collect(ws, timeout=20)
                assert messages[-1]["code"] == "idle_timeout" and ws.close_code == 1008
            # a stalled HTTP handshake: the TCP connection is dropped after handshake_timeout_s
            reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
            writer.write(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n")  # ... and never finishes
            await writer.drain()
            t0 = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 20) == b""
            assert time.monotonic() - t0 < 15
            writer.close()
            assert await wait_for(lambda: engine.stats().active_streams == 0)

    run(main())


def test_max_stream_duration_sends_finals_then_error(engine, model_dir):
    async def main():
        async with running_app(settings_for_tests(model_dir, max_stream_s=1.5), engine) as app:
            async with connect(f"ws://127.0.0.1:{app.port}/v1/stream") as ws:
                await ws.send(json.dumps({"type": "start"}))
                await ws.recv()
                audio = noise(3.0, 4)
                try:
                    for i in range(0, len(audio), 3200):
                        await ws.send(audio[i : i + 3200])
                except ConnectionClosed:
                    pass
                messages = await collect(ws)
            assert ws.close_code == 1008
            assert messages[-1]["type"] == "error" and messages[-1]["code"] == "max_duration"
            assert any(m["type"] == "final" for m in messages)
            finals = [m for m in messages if m["type"] == "final"]
            assert max(f["end"] for f in finals) <= 1.5 + 1e-6

    run(main())


def test_end_timeout_grows_with_the_backlog_and_is_capped() -> None:
    from streamer.server.session import (
        END_TIMEOUT_BASE_S,
        END_TIMEOUT_MAX_S,
        END_TIMEOUT_RTF,
        end_timeout,
    )

    assert end_timeout(0.0) == END_TIMEOUT_BASE_S
    assert end_timeout(10.0) == pytest.approx(END_TIMEOUT_BASE_S + 10.0 * END_TIMEOUT_RTF)
    assert end_timeout(1e9) == END_TIMEOUT_MAX_S
    for nonsense in (-5.0, float("nan"), float("-inf")):
        assert end_timeout(nonsense) == END_TIMEOUT_BASE_S
    assert end_timeout(float("inf")) == END_TIMEOUT_BASE_S  # not a backlog: a broken statistic
    assert end_timeout(3.0, base_s=2.0, rtf=1.5, max_s=5.0) == 5.0
    assert end_timeout(1.0, base_s=2.0, rtf=1.5, max_s=5.0) == 3.5
    assert end_timeout(1.0, base_s=10.0, max_s=5.0) == 10.0  # a cap below the base never shortens it
    backlogs = [0.0, 0.5, 2.0, 8.0, 30.0, 100.0]
    timeouts = [end_timeout(b) for b in backlogs]
    assert timeouts == sorted(timeouts)


def test_end_timeout_of_a_stream_counts_its_unprocessed_audio(model_dir) -> None:
    from streamer.engine import RecognitionEngine
    from streamer.server.app import App
    from streamer.server.protocol import StartConfig
    from streamer.server.session import END_TIMEOUT_BASE_S, EngineBridge, end_timeout
    from streamer.server.testing import settings_for_tests as settings_for

    settings = settings_for(model_dir)
    engine = RecognitionEngine(settings)  # worker not started: nothing gets processed

    async def main():
        bridge = EngineBridge(App(settings, engine), "stream", StartConfig())  # the app is not listening
        try:
            assert bridge.end_timeout() == END_TIMEOUT_BASE_S
            bridge.accept(noise(4.0, 1), 4 * 16000)
            queued = bridge.stream.queued_seconds()
            assert 3.0 < queued <= 4.0
            assert bridge.end_timeout() == end_timeout(queued) > END_TIMEOUT_BASE_S
        finally:
            bridge.close()

    run(main())


def test_abrupt_disconnect_mid_utterance_frees_the_stream(engine, model_dir):
    async def main():
        async with running_app(settings_for_tests(model_dir), engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            for _ in range(3):
                ws = await connect(url)
                await ws.send(json.dumps({"type": "start"}))
                await ws.recv()
                await ws.send(noise(1.2, 5))
                ws.transport.abort()  # no close frame, mid-utterance
            assert await wait_for(lambda: app.metrics.streams_active.value() == 0, 10)
            assert await wait_for(lambda: engine.stats().active_streams == 0, 10)
            assert not app.sessions
            assert app.metrics.errors.value(code="client_gone") == 3
            _messages, code = await stream_audio(url, noise(1.0, 6))  # the server is fine
            assert code == 1000

    run(main())


def test_max_connections_refused_with_503_and_counted(engine, model_dir):
    async def main():
        async with running_app(settings_for_tests(model_dir, max_connections=2), engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            a = await connect(url)
            b = await connect(url)
            with pytest.raises(InvalidStatus) as info:
                await connect(url)
            assert info.value.response.status_code == 503
            assert app.metrics.connections_refused.value(reason="max_connections") == 1
            await a.close()
            await b.close()
            assert await wait_for(lambda: not app.sessions)
            async with connect(url) as c:  # room again
                await c.send(json.dumps({"type": "start"}))
                assert json.loads(await c.recv())["type"] == "ready"

    run(main())


# ------------------------------------------------------------------------------------------ HTTP


def http_get(url: str, headers: dict | None = None, context=None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_healthz_metrics_and_page(engine, model_dir):
    async def main():
        async with running_app(settings_for_tests(model_dir), engine) as app:
            base = f"http://127.0.0.1:{app.port}"
            await stream_audio(f"ws://127.0.0.1:{app.port}/v1/stream", noise(2.0, 8))
            status, headers, body = await asyncio.to_thread(http_get, base + "/healthz")
            health = json.loads(body)
            assert status == 200 and health["status"] == "ok" and health["engine_alive"] is True
            assert health["model"] == engine.model_name
            status, headers, body = await asyncio.to_thread(http_get, base + "/metrics")
            assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = body.decode()
            for name in (
                "conformer_streams_active 0",
                'conformer_streams_total{endpoint="stream"} 1',
                "conformer_real_time_factor ",
                'conformer_event_latency_seconds_bucket{type="final",le="+Inf"}',
                "conformer_connections_refused_total",
                "conformer_engine_up 1",
                'conformer_engine_window_latency_seconds{quantile="0.9"}',
                "# TYPE conformer_event_latency_seconds histogram",
                "# TYPE conformer_engine_windows_total counter",
                "# TYPE conformer_engine_queue_depth gauge",
            ):
                assert name in text, name
            audio_line = next(
                x
                for x in text.splitlines()
                if x.startswith('conformer_audio_seconds_total{endpoint="stream"}')
            )
            assert float(audio_line.split()[-1]) == pytest.approx(2.0)
            status, headers, body = await asyncio.to_thread(http_get, base + "/")
            assert (
                status == 200 and b"<html" in body.lower() and headers["Content-Type"].startswith("text/html")
            )
            for bad in ("/static/../../streamer/config.py", "/static/%2e%2e/%2e%2e/pyproject.toml", "/nope"):
                status, _, body = await asyncio.to_thread(http_get, base + bad)
                assert status == 404 and b"Settings" not in body and b"[project]" not in body

    run(main())


def test_engine_statistics_are_counters_and_levels_are_gauges() -> None:
    from streamer.engine import EngineStats
    from streamer.server.metrics import CallbackCounter, ServerMetrics

    stats = EngineStats(
        active_streams=2,
        audio_seconds=12.5,
        compute_seconds=3.25,
        batches=7,
        windows=20,
        gated_windows=4,
        queue_depth=1,
        queued_audio_seconds=0.5,
        overloads=1,
        errors=2,
        latency_samples=(0.1, 0.2),
    )
    text = ServerMetrics(lambda: stats).render()
    types, values = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    for name, value in {
        "conformer_engine_audio_seconds_total": 12.5,
        "conformer_engine_compute_seconds_total": 3.25,
        "conformer_engine_batches_total": 7,
        "conformer_engine_windows_total": 20,
        "conformer_engine_gated_windows_total": 4,
        "conformer_engine_overloads_total": 1,
        "conformer_engine_errors_total": 2,
    }.items():
        assert types[name] == "counter" and values[name] == value, name
    for name, value in {
        "conformer_engine_streams_active": 2,
        "conformer_engine_queue_depth": 1,
        "conformer_engine_queued_audio_seconds": 0.5,
        "conformer_real_time_factor": 0.26,
        "conformer_engine_up": 1,
    }.items():
        assert types[name] == "gauge" and values[name] == pytest.approx(value), name
    assert types["conformer_engine_window_latency_seconds"] == "gauge"
    assert all(name.endswith("_total") for name, kind in types.items() if kind == "counter")
    for old in (
        "audio_seconds",
        "compute_seconds",
        "batches",
        "windows",
        "gated_windows",
        "overloads",
        "errors",
    ):
        assert f"conformer_engine_{old}" not in types  # the monotonic statistics are no longer gauges
    with pytest.raises(ValueError, match="_total"):
        CallbackCounter("t_seconds", "a counter must be named *_total", lambda: 1.0)


def test_healthz_is_503_when_the_engine_worker_is_dead(model_dir):
    from streamer.engine import RecognitionEngine

    engine = RecognitionEngine(settings_for_tests(model_dir))
    engine.start()

    async def main():
        async with running_app(settings_for_tests(model_dir), engine) as app:
            url = f"http://127.0.0.1:{app.port}/healthz"
            assert (await asyncio.to_thread(http_get, url))[0] == 200
            engine.scheduler.stop(timeout=5)  # the inference worker is gone
            status, _, body = await asyncio.to_thread(http_get, url)
            assert status == 503 and json.loads(body)["status"] == "engine_dead"
            metrics = (await asyncio.to_thread(http_get, f"http://127.0.0.1:{app.port}/metrics"))[2]
            assert b"conformer_engine_up 0" in metrics

    run(main())


def test_token_and_origin_allow_list(engine, model_dir):
    async def main():
        settings = settings_for_tests(model_dir)
        settings.server.token = "s3cret"
        settings.server.allowed_origins = ["https://ok.example"]
        async with running_app(settings, engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            for kwargs in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
                with pytest.raises(InvalidStatus) as info:
                    await connect(url, **kwargs)
                assert info.value.response.status_code == 401
            with pytest.raises(InvalidStatus) as info:
                await connect(url + "?token=s3cret", origin="https://evil.example")
            assert info.value.response.status_code == 403
            async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
                await ws.send(json.dumps({"type": "start"}))
                assert json.loads(await ws.recv())["type"] == "ready"
            async with connect(url + "?token=s3cret", origin="https://ok.example") as ws:
                await ws.send(json.dumps({"type": "start"}))
                assert json.loads(await ws.recv())["type"] == "ready"
            base = f"http://127.0.0.1:{app.port}"
            assert (await asyncio.to_thread(http_get, base + "/metrics"))[0] == 401
            assert (await asyncio.to_thread(http_get, base + "/metrics?token=s3cret"))[0] == 200
            assert (await asyncio.to_thread(http_get, base + "/healthz"))[0] == 200
            assert (
                app.metrics.connections_refused.value(reason="unauthorized") == 3
            )  # 2 websockets + /metrics
            assert app.metrics.connections_refused.value(reason="origin") == 1

    run(main())


def test_tls(engine, model_dir, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main():
        settings = settings_for_tests(model_dir)
        settings.server.tls_cert, settings.server.tls_key = str(cert), str(key)
        async with running_app(settings, engine) as app:
            async with connect(f"wss://127.0.0.1:{app.port}/v1/stream", ssl=client_ctx) as ws:
                await ws.send(json.dumps({"type": "start"}))
                assert json.loads(await ws.recv())["type"] == "ready"
            status, _, _ = await asyncio.to_thread(
                http_get, f"https://127.0.0.1:{app.port}/healthz", None, client_ctx
            )
            assert status == 200

    run(main())


def test_unknown_websocket_path_is_404(engine, model_dir):
    async def main():
        async with running_app(settings_for_tests(model_dir), engine) as app:
            with pytest.raises(InvalidStatus) as info:
                await connect(f"ws://127.0.0.1:{app.port}/v2/other")
            assert info.value.response.status_code == 404

    run(main())


def test_free_port_helper_binds_loopback_only(engine, model_dir):
    async def main():
        async with running_app(settings_for_tests(model_dir), engine) as app:
            (sock,) = app.server.sockets
            assert sock.family == socket.AF_INET and sock.getsockname()[0] == "127.0.0.1"

    run(main())


@pytest.mark.parametrize("policy", ["close", "drop_oldest"])
def test_engine_overload_is_reported(model_dir, policy):
    from streamer.engine import RecognitionEngine

    settings = settings_for_tests(model_dir, max_queued_s=0.5, overload_policy=policy)
    engine = RecognitionEngine(settings)
    engine.start()

    async def main():
        async with running_app(settings, engine) as app:
            url = f"ws://127.0.0.1:{app.port}/v1/stream"
            async with connect(url) as ws:
                await ws.send(json.dumps({"type": "start"}))
                await ws.recv()
                try:
                    await ws.send(noise(3.0, 12))  # 3 s at once: far over max_queued_s
                    await ws.send(json.dumps({"type": "end"}))
                except ConnectionClosed:
                    pass
                messages = await collect(ws)
            errors = [m for m in messages if m["type"] == "error"]
            assert errors and errors[0]["code"] == "overload"
            if policy == "close":
                assert errors[-1]["fatal"] is True and ws.close_code == 1013
            else:
                assert errors[0]["fatal"] is False and messages[-1]["type"] == "end" and ws.close_code == 1000
            assert app.metrics.errors.value(code="overload") >= 1

    try:
        run(main())
    finally:
        engine.stop(drain=False)


def test_the_server_delivers_exactly_what_the_engine_recognizes(engine, model_dir):
    """Transport adds nothing and loses nothing: the same text (and word timings) as the engine's own
    streaming API on the same audio."""
    audio = noise(3.2, 31)
    samples = np.frombuffer(audio, dtype="<i2")
    finals = [f for f in engine.transcribe_stream(samples, 1600) if f.text]

    async def main():
        async with running_app(settings_for_tests(model_dir), engine) as app:
            return await stream_audio(f"ws://127.0.0.1:{app.port}/v1/stream", audio, frame=3200)

    messages, code = run(main())
    assert code == 1000
    got = [m for m in messages if m["type"] == "final" and m["text"]]
    assert [m["text"] for m in got] == [f.text for f in finals]
    assert [[w["word"] for w in m["words"]] for m in got] == [[w.word for w in f.words] for f in finals]
