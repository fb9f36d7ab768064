"""The browser captioning page (clients/web/) in real headless Chromium.

Chromium's fake capture device plays a synthesized sentence (looping) into getUserMedia; the page's
AudioWorklet downsamples it to 16 kHz and streams it to a server on 127.0.0.1; the test reads the captions
from the DOM through the DevTools protocol (a ~40-line client over ``websockets``), saves screenshots under
``artifacts/`` and stops the stream itself (the fake device would loop forever).

* against ``FakeServer`` (protocol only, no model): capture, streaming, rendering, stop, listen mode,
  360 px layout — always runs where Chromium is installed;
* against the real daemon (``conformer-streamer serve``) with a tiny random model: protocol level;
* text correctness with the trained model, and the README screenshot: test_clients_trained.py.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from test_clients_fakeserver import FakeServer

from model.hub import default_model_dir

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.access(p, os.X_OK)), None
)
SENTENCE = "the quick brown fox jumps over the lazy dog"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt install chromium)"),
]


# ------------------------------------------------------------------------------------------ CDP


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page target."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._connection = connect(ws_url, max_size=None, open_timeout=30)
        self.ws = self._connection.__enter__()
        self.ids = itertools.count(1)

    def call(self, method: str, timeout: float = 30, **params):
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page exception: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()


PAGE_STATE = """JSON.stringify({
  phase: window.captionState ? window.captionState.phase : null,
  finals: [...document.querySelectorAll('#transcript li .text')].map(e => e.textContent),
  times: [...document.querySelectorAll('#transcript li time')].map(e => e.textContent),
  partial: document.getElementById('partial').hidden ? '' : document.getElementById('partial').textContent.trim(),
  partialStyle: getComputedStyle(document.getElementById('partial')).fontStyle,
  finalStyle: document.querySelector('#transcript li .text')
      ? getComputedStyle(document.querySelector('#transcript li .text')).fontStyle : null,
  status: document.getElementById('status-text').textContent,
  error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
  overflowX: document.documentElement.scrollWidth - document.documentElement.clientWidth,
})"""


class Browser:
    def __init__(self, url: str, wav: Path, profile: Path, width: int = 900, height: int = 640) -> None:
        args = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}",
            "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            url,
        ]
        self.log = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.devtools = self._attach(profile, url)

    def _attach(self, profile: Path, url: str) -> DevTools:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, "chromium exited early"
            if port_file.exists() and port_file.read_text().strip():
                port = int(port_file.read_text().split()[0])
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                        targets = json.load(r)
                    pages = [
                        t
                        for t in targets
                        if t.get("type") == "page" and t["url"].startswith(url.split("?")[0])
                    ]
                    if pages:
                        return DevTools(pages[0]["webSocketDebuggerUrl"])
                except OSError:
                    pass
            assert time.monotonic() < deadline, "no DevTools page target within 60 s"
            time.sleep(0.2)

    def state(self) -> dict:
        return json.loads(self.devtools.evaluate(PAGE_STATE))

    def wait_for(self, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        state: dict = {}
        while True:
            try:
                state = self.state()
            except RuntimeError:  # the page is still loading
                state = {}
            if state and predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; page state: {state}")
            time.sleep(0.2)

    def close(self) -> None:
        self.devtools.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def browser(tmp_path):
    opened: list[Browser] = []

    def open_page(url: str, wav: Path, **kw) -> Browser:
        b = Browser(url, wav, tmp_path / f"profile{len(opened)}", **kw)
        opened.append(b)
        return b

    yield open_page
    for b in opened:
        b.close()


# ----------------------------------------------------------------------------------------- audio


@pytest.fixture(scope="module")
def sentence_wav(tmp_path_factory) -> Path:
    """The sentence, synthesized (espeak-ng), 48 kHz mono s16, with silence around it (the loop gap)."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to synthesize the test sentence")
    folder = tmp_path_factory.mktemp("browser-audio")
    raw = folder / "raw.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), SENTENCE], check=True)
    out = folder / "sentence48k.wav"
    subprocess.run(
        ["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(out), "pad", "0.5", "1.5"], check=True
    )
    return out


def _save(b: Browser, name: str) -> Path:
    path = ARTIFACTS / name
    b.devtools.screenshot(path)
    return path


# ---------------------------------------------------------------------------------- fake server


def test_page_streams_fake_mic_and_shows_captions(browser, sentence_wav):
    with FakeServer(utterance_s=1.0) as server:
        b = browser(server.http_url + "/?autostart=1", sentence_wav)
        state = b.wait_for(lambda s: len(s["finals"]) >= 2, 60, "two finals")
        assert state["phase"] == "running" and state["status"].startswith("Listening"), state
        assert state["finals"][:2] == ["utterance 1", "utterance 2"]
        assert state["times"][:2] == ["00:00", "00:01"]
        assert state["finalStyle"] == "normal"
        state = b.wait_for(lambda s: s["partial"], 20, "a partial")
        assert state["partialStyle"] == "italic"  # tentative text is visibly distinct
        assert server.starts[0] == {
            "type": "start",
            "version": 1,
            "sample_rate": 16000,
            "encoding": "pcm_s16le",
            "partials": True,
            "words": True,
            "format": "readable",  # captions are for people: punctuated, true-cased finals
        }
        _save(b, "browser_fake_running.png")
        # 16 kHz s16: the bytes received match the wall-clock time the page has been streaming
        seconds = server.audio_bytes[0] / 32000
        assert seconds >= 1.9
        b.devtools.evaluate("document.getElementById('toggle').click()")
        state = b.wait_for(lambda s: s["phase"] == "stopped", 20, "the stream to stop")
        assert server.ended_streams == 1  # the page sent "end" and got "end" back
        assert state["error"] == "" and state["status"] == "Stopped"
        assert state["partial"] == ""
        _save(b, "browser_fake_stopped.png")


SCROLL = """JSON.stringify((() => { const c = document.getElementById('captions');
  return {gap: c.scrollHeight - c.scrollTop - c.clientHeight, top: c.scrollTop, overflow: c.scrollHeight > c.clientHeight}; })())"""


def test_page_autoscrolls_unless_the_reader_scrolled_up(browser, sentence_wav):
    with FakeServer(utterance_s=0.2) as server:  # ~5 finals per second
        b = browser(server.http_url + "/?autostart=1", sentence_wav, width=500, height=420)
        b.wait_for(lambda s: len(s["finals"]) >= 15, 60, "15 finals")
        scroll = json.loads(b.devtools.evaluate(SCROLL))
        assert scroll["overflow"] and scroll["gap"] < 60, scroll  # following the newest line
        b.devtools.evaluate("document.getElementById('captions').scrollTop = 0")  # the reader scrolls up
        count = len(b.state()["finals"])
        b.wait_for(lambda s: len(s["finals"]) >= count + 5, 30, "more finals")
        scroll = json.loads(b.devtools.evaluate(SCROLL))
        assert scroll["top"] <= 5 and scroll["gap"] > 100, scroll  # the reader stays where they are
        b.devtools.evaluate("document.getElementById('toggle').click()")
        b.wait_for(lambda s: s["phase"] == "stopped", 20, "stop")


WORKLET_PROBE = """(async () => {
  const results = {};
  for (const [rate, tone] of RUNS) {
    const ctx = new OfflineAudioContext(1, rate, rate);  // one second
    await ctx.audioWorklet.addModule('static/capture-worklet.js');
    const node = new AudioWorkletNode(ctx, 'capture-processor',
        {numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: 'explicit'});
    const chunks = [];
    let flushed = null;
    const done = new Promise((resolve) => { flushed = resolve; });
    node.port.onmessage = (e) => {
      if (e.data.type === 'audio') chunks.push(...new Int16Array(e.data.pcm));
      if (e.data.type === 'flushed') flushed();
    };
    const osc = new OscillatorNode(ctx, {frequency: tone});
    const gain = new GainNode(ctx, {gain: 0.5});
    osc.connect(gain).connect(node);
    osc.start();
    await ctx.startRendering();
    node.port.postMessage('flush');
    await done;
    results[rate + ':' + tone] = chunks;
  }
  return JSON.stringify(results);
})()"""


def test_worklet_downsamples_to_16k_without_aliasing(browser, sentence_wav):
    """The capture worklet in an OfflineAudioContext: 44.1/48 kHz tones in, 16 kHz Int16 out."""
    import numpy as np

    runs = [(48000, 440), (44100, 1000), (48000, 12000)]  # 12 kHz is above the 8 kHz Nyquist: must vanish
    with FakeServer() as server:
        b = browser(server.http_url + "/", sentence_wav)
        b.wait_for(lambda s: s["phase"] == "idle", 30, "the page")
        out = json.loads(b.devtools.evaluate(WORKLET_PROBE.replace("RUNS", json.dumps(runs))))
    for rate, tone in runs:
        pcm = np.asarray(out[f"{rate}:{tone}"], dtype=np.float64) / 32768
        # one second of input -> one second at 16 kHz, minus the filter's look-ahead (8 zero crossings)
        assert abs(pcm.size - 16000) <= 40, (rate, pcm.size)  # (rendering ends on a 128-frame quantum)
        steady = pcm[200:-200]
        rms = np.sqrt(np.mean(steady**2))
        if tone < 8000:
            assert abs(rms - 0.5 / np.sqrt(2)) < 0.02, (rate, tone, rms)  # passband gain ~1
            spectrum = np.abs(np.fft.rfft(steady * np.hanning(steady.size)))
            peak_hz = np.argmax(spectrum) * 16000 / steady.size
            assert abs(peak_hz - tone) < 5, (rate, tone, peak_hz)
        else:
            assert rms < 0.5 / np.sqrt(2) / 100, (rate, tone, rms)  # > 40 dB down, no alias at 4 kHz


def test_page_listen_mode_and_narrow_layout(browser, sentence_wav):
    with FakeServer() as server:
        b = browser(server.http_url + "/?mode=listen&autostart=1", sentence_wav, width=360, height=640)
        b.devtools.call(
            "Emulation.setDeviceMetricsOverride", width=360, height=640, deviceScaleFactor=1, mobile=True
        )
        state = b.wait_for(lambda s: len(s["finals"]) >= 2, 30, "listen finals")
        assert state["finals"][:2] == ["hello from the daemon microphone", "second caption line"]
        assert state["overflowX"] <= 0, "the page scrolls sideways at 360 px"
        assert not server.starts  # listen mode sends no audio
        assert "/v1/listen" in server.http_requests
        _save(b, "browser_fake_listen_360px.png")
        b.devtools.evaluate("document.getElementById('toggle').click()")
        b.wait_for(lambda s: s["phase"] == "stopped", 10, "stop")


def test_page_reports_server_errors(browser, sentence_wav):
    with FakeServer(fail_after_s=0.5) as server:
        b = browser(server.http_url + "/?autostart=1", sentence_wav)
        state = b.wait_for(lambda s: s["phase"] == "error", 30, "the error")
        assert "overload" in state["error"]
        assert state["status"] == "Error"


# ---------------------------------------------------------------------------------- real server


@pytest.fixture
def serve():
    """Start `conformer-streamer serve` on a free port (the Serve helper of test_clients_live)."""
    from test_clients_live import Serve

    started = []

    def start(*args: str):
        s = Serve("--port", "0", *args)
        started.append(s)
        s.wait_listening()
        return s

    yield start
    for s in started:
        s.__exit__(None, None, None)


@pytest.mark.skipif(
    (default_model_dir() / "config.json").exists(),
    reason="test_clients_trained.py covers it with the model",
)
def test_page_against_real_daemon_tiny_model(browser, sentence_wav, serve, tmp_path_factory):
    """Protocol level with the real daemon: its static files, start/ready, PCM, finals, end."""
    pytest.importorskip("transformers")
    from streamer.server.testing import make_tiny_model

    model = tmp_path_factory.getbasetemp() / "clients-tiny-model"
    if not (model / "config.json").exists():
        make_tiny_model(model)
    daemon = serve("--model", str(model))
    b = browser(f"http://127.0.0.1:{daemon.port}/?autostart=1", sentence_wav)
    state = b.wait_for(lambda s: s["finals"], 90, "a final from the daemon")
    assert state["phase"] == "running" and state["error"] == "", state
    assert state["times"][0].count(":") == 1
    b.devtools.evaluate("document.getElementById('toggle').click()")
    state = b.wait_for(lambda s: s["phase"] in ("stopped", "error"), 30, "stop")
    assert state["phase"] == "stopped" and state["error"] == "", state
