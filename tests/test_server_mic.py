"""``serve --mic``: microphone captions broadcast on ``/v1/listen``, device loss and back-off.

Two levels:
* through a real PortAudio device: a private PulseAudio daemon (temp HOME/runtime dir, own socket) with a
  ``module-pipe-source`` fed in real time, read by sounddevice through ALSA's ``pulse`` device; the device
  is lost by killing the daemon and comes back when it is restarted (skipped where PulseAudio can't run);
* at sounddevice's stream boundary: the real ``MicSource`` code path with the ``InputStream`` class
  substituted by a scripted one (open failures, a stream that finishes), to pin the back-off schedule.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer.server.mic import MicSource, parse_device
from streamer.server.testing import running_app, settings_for_tests, wait_for

pytestmark = pytest.mark.timeout(300)


def test_parse_device():
    assert parse_device(None) is None and parse_device("") is None and parse_device(" ") is None
    assert parse_device("3") == 3
    assert parse_device("pulse") == "pulse"


async def listen(port: int, messages: list, stop: asyncio.Event) -> None:
    async with connect(f"ws://127.0.0.1:{port}/v1/listen") as ws:
        try:
            while not stop.is_set():
                try:
                    async with asyncio.timeout(0.1):
                        messages.append(json.loads(await ws.recv()))
                except TimeoutError:
                    pass
        except ConnectionClosed:
            pass


# ------------------------------------------------------------------ substituted InputStream class


class ScriptedInputStream:
    """Stands in for ``sounddevice.InputStream``: same constructor keywords, start/stop/close/active.

    ``script`` is shared by the instances: the first ``fail_opens`` constructions raise, then each
    stream delivers ``blocks`` callbacks of noise from a thread and finishes (device lost).
    """

    def __init__(self, script: dict, **kwargs) -> None:
        self.script = script
        script["opens"].append(time.monotonic())
        if len(script["opens"]) <= script["fail_opens"]:
            raise OSError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
        assert kwargs["samplerate"] == 16000 and kwargs["channels"] == 1 and kwargs["dtype"] == "int16"
        self.kwargs = kwargs
        self.active = False
        self._stop = threading.Event()

    def start(self) -> None:
        self.active = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        rng = np.random.RandomState(len(self.script["opens"]))
        block = self.kwargs["blocksize"]
        for _ in range(self.script["blocks"]):
            if self._stop.wait(block / 16000 / 4):  # 4x real time
                return
            data = (rng.randn(block, 1) * 4000).astype(np.int16)
            self.kwargs["callback"](data, block, None, None)
        self.active = False
        self.kwargs["finished_callback"]()

    def stop(self) -> None:
        self._stop.set()
        self.active = False

    def close(self) -> None:
        self._stop.set()


def test_device_loss_is_reported_and_retried_with_exponential_backoff(engine, model_dir):
    script = {"opens": [], "fail_opens": 3, "blocks": 30}
    factory = functools.partial(
        MicSource,
        stream_factory=functools.partial(ScriptedInputStream, script),
        retry_initial_s=0.1,
        retry_max_s=0.4,
        stall_s=1.0,
    )

    async def main():
        settings = settings_for_tests(model_dir)
        settings.server.mic = ""
        async with running_app(settings, engine, mic_factory=factory) as app:
            messages: list = []
            stop = asyncio.Event()
            listener = asyncio.create_task(listen(app.port, messages, stop))
            assert await wait_for(lambda: len(script["opens"]) >= 6, 20)
            stop.set()
            await listener
            opens = script["opens"]
            gaps = np.diff(opens[:4])
            # 3 failed opens: waits of 0.1, 0.2, 0.4 s (doubling, capped at retry_max_s); a busy machine
            # only makes them longer
            for gap, expected in zip(gaps, (0.1, 0.2, 0.4), strict=True):
                assert expected - 0.02 <= gap <= expected + 1.0, gaps
            assert app.metrics.mic_errors.value(kind="open_failed") == 3
            assert app.metrics.mic_errors.value(kind="device_lost") >= 1
            assert messages[0]["type"] == "ready" and messages[0]["stream_id"] == app.mic.stream_id
            errors = [m for m in messages if m["type"] == "error"]
            assert any(
                e["code"] == "mic_error" and e["fatal"] is False and "lost" in e["message"] for e in errors
            )
            assert any(m["type"] == "partial" for m in messages)  # captions flowed between the losses
            assert any(m["type"] == "final" for m in messages)  # the lost device's utterance was finished
            health = app._healthz()
            assert json.loads(health.body)["mic"]["errors"]

    asyncio.run(main())


def test_listen_without_mic_is_refused_cleanly(engine, model_dir):
    async def main():
        async with (
            running_app(settings_for_tests(model_dir), engine) as app,
            connect(f"ws://127.0.0.1:{app.port}/v1/listen") as ws,
        ):
            message = json.loads(await ws.recv())
            assert message["type"] == "error" and message["code"] == "no_source"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1008

    asyncio.run(main())


# ------------------------------------------------------------------------- real PortAudio device


class PrivatePulse:
    """A PulseAudio daemon of our own (never touches a system or session daemon)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.run_dir = root / "run"
        self.home.mkdir(exist_ok=True)
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        self.socket = self.run_dir / "native"
        self.fifo = self.run_dir / "mic.fifo"
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.run_dir),
            "PULSE_SERVER": f"unix:{self.socket}",
        }
        self.proc: subprocess.Popen | None = None
        self.feeding = threading.Event()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disable-shm=yes",
             "--use-pid-file=no", "--log-target=stderr",
             "-L", f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
             "-L", "module-null-sink sink_name=vsink"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._pactl("info").returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("pulseaudio did not start")
        if self.fifo.exists():
            self.fifo.unlink()
        result = self._pactl(
            "load-module", "module-pipe-source", "source_name=vmic", f"file={self.fifo}",
            "format=s16le", "rate=16000", "channels=1",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert self._pactl("set-default-source", "vmic").returncode == 0

    def _pactl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)

    def feed(self, audio: np.ndarray) -> threading.Thread:
        """Write ``audio`` (int16) into the pipe source in real time, looping, until stop()."""
        self.feeding.set()

        def run() -> None:
            try:
                fd = os.open(self.fifo, os.O_WRONLY)
            except OSError:
                return
            block = 1600
            try:
                i = 0
                while self.feeding.is_set():
                    chunk = audio[i : i + block]
                    if len(chunk) < block:
                        i = 0
                        continue
                    os.write(fd, chunk.tobytes())
                    i += block
                    time.sleep(block / 16000)
            except OSError:
                pass
            finally:
                os.close(fd)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.feeding.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def pulse(tmp_path_factory):
    if not shutil.which("pulseaudio") or not shutil.which("pactl"):
        pytest.skip("PulseAudio is not installed")
    sd = pytest.importorskip("sounddevice")
    server = PrivatePulse(tmp_path_factory.mktemp("pulse"))
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.skip(f"cannot run a private PulseAudio here: {exc}")
    saved = os.environ.get("PULSE_SERVER")
    os.environ["PULSE_SERVER"] = server.env["PULSE_SERVER"]  # the ALSA pulse plugin reads it
    sd._terminate()  # PortAudio lists ALSA's "pulse" device only if a server answers at initialisation
    sd._initialize()
    if not any(d["name"] == "pulse" for d in sd.query_devices()):
        server.stop()
        pytest.skip("PortAudio has no ALSA 'pulse' device")
    yield server
    server.stop()
    if saved is None:
        os.environ.pop("PULSE_SERVER", None)
    else:
        os.environ["PULSE_SERVER"] = saved


@pytest.mark.slow
def test_real_portaudio_device_captions_and_recovers_from_device_loss(engine, model_dir, pulse):
    rng = np.random.RandomState(77)
    audio = (rng.randn(16000 * 3) * 4000).astype("<i2")
    pulse.feed(audio)
    factory = functools.partial(MicSource, retry_initial_s=0.2, retry_max_s=1.0, stall_s=1.0)

    async def main():
        settings = settings_for_tests(model_dir)
        settings.server.mic = "pulse"
        async with running_app(settings, engine, mic_factory=factory) as app:
            messages: list = []
            stop = asyncio.Event()
            listener = asyncio.create_task(listen(app.port, messages, stop))
            assert await wait_for(lambda: app.mic.capturing, 15)
            assert await wait_for(lambda: any(m["type"] == "partial" for m in messages), 20), messages
            assert app.metrics.mic_up.value() == 1
            # the device goes away
            await asyncio.to_thread(pulse.stop)
            assert await wait_for(lambda: app.metrics.mic_errors.value(kind="device_lost") >= 1, 15)
            assert await wait_for(
                lambda: any(m["type"] == "error" and m["code"] == "mic_error" for m in messages), 5
            )
            assert await wait_for(lambda: app.metrics.mic_errors.value(kind="open_failed") >= 1, 10)
            # ... and comes back
            await asyncio.to_thread(pulse.start)
            pulse.feed(audio)
            before = len(messages)
            assert await wait_for(lambda: app.mic.capturing, 20)
            assert await wait_for(lambda: any(m["type"] == "partial" for m in messages[before:]), 20)
            stop.set()
            await listener

    asyncio.run(main())


def test_shutdown_broadcasts_the_microphone_final_then_closes_listeners_1001(engine, model_dir):
    script = {"opens": [], "fail_opens": 0, "blocks": 10_000}
    factory = functools.partial(MicSource, stream_factory=functools.partial(ScriptedInputStream, script))

    async def main():
        settings = settings_for_tests(model_dir)
        settings.server.mic = ""
        messages: list = []
        async with running_app(settings, engine, mic_factory=factory) as app:
            ws = await connect(f"ws://127.0.0.1:{app.port}/v1/listen")

            async def read():
                try:
                    async for m in ws:
                        messages.append(json.loads(m))
                except ConnectionClosed:
                    pass

            reader = asyncio.create_task(read())
            assert await wait_for(lambda: any(m["type"] == "partial" for m in messages), 20)
        # running_app's exit = graceful stop
        await asyncio.wait_for(reader, 10)
        assert ws.close_code == 1001
        assert messages[-1]["type"] in ("final", "end"), messages[-3:]
        assert any(m["type"] == "final" for m in messages)

    asyncio.run(main())
