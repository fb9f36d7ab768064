"""Catch-up windows (``[streaming] max_chunks_per_window``): when the live worker is late, one window owns
several waiting chunks. They own exactly the frames of the windows they replace, engage only when the
worker is late (never on the synchronous path, never for a burst the worker keeps up with), and the
transcript stays as good as without them."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import shipped_model_dir
from test_stream_engine import babble, make_settings, tiny_dir  # noqa: F401  (tiny_dir: a fixture)

from streamer import config
from streamer.engine import RecognitionEngine
from streamer.events import Final
from streamer.ring_buffer import RingBuffer
from streamer.stream import RecognitionStream, WindowQueue
from streamer.vad import GateSettings, SpeechGate
from streamer.windowing import Chunker, FrameGeometry, Window, WindowKind, WindowLayout

GEO = FrameGeometry()
LAYOUT = WindowLayout.from_seconds(GEO, 1.0, 0.5, 0.5)  # the default layout
CHUNK_FRAMES = LAYOUT.chunk // GEO.stride


class SignDetector:
    """A stand-in speech detector: 'speech' when the frame's mean is positive."""

    def process_samples(self, samples: np.ndarray) -> float:
        return 1.0 if float(np.mean(samples)) > 0 else 0.0

    def reset(self) -> None:
        pass


def speech_gate() -> SpeechGate:
    return SpeechGate(GateSettings(pad_s=0.1, floor_dbfs=None), SignDetector())


def signal(seconds: float, seed: int = 0) -> np.ndarray:
    """'Speech' (noise with a positive mean), a digital silence (2.1-4.2 s: the energy gate skips it) and
    loud non-speech (5.2-6.9 s, a negative mean: the speech gate skips it)."""
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal(int(seconds * 16000)) * 0.1 + 0.03).astype(np.float32)
    audio[int(2.1 * 16000) : int(4.2 * 16000)] = 0.0
    audio[int(5.2 * 16000) : int(6.9 * 16000)] -= 0.06
    return audio


def windows_of(
    audio: np.ndarray, max_chunks: int, gate: str, *, packet: int, close_at: float | None = None
) -> list[Window]:
    """Every window a chunker makes of ``audio`` arriving in ``packet``-sample pieces, then the end."""
    buffer = RingBuffer(16000 * 30)
    speech = speech_gate() if gate == "speech" else None
    chunker = Chunker(
        GEO,
        LAYOUT,
        buffer,
        normalization="running",
        energy_gate_dbfs=-60.0 if gate == "energy" else None,
        cache_features=True,
        speech_gate=speech,
    )
    out: list[Window] = []
    for pos in range(0, len(audio), packet):
        piece = audio[pos : pos + packet]
        buffer.append(piece)
        if speech is not None:
            speech.feed(piece)
        if close_at is not None and buffer.end >= close_at * 16000 > buffer.end - len(piece):
            chunker.close_segment()
        out.extend(iter(lambda: chunker.next_window(max_chunks), None))
    chunker.close_segment(eos=True)
    out.extend(iter(lambda: chunker.next_window(max_chunks), None))
    assert out[-1].eos
    return out


def owned_frames(windows: list[Window]) -> list[tuple[int, int]]:
    """(segment, frame) of every owned frame, in window order."""
    return [(w.generation, f) for w in windows for f in range(w.first_frame, w.first_frame + w.owned)]


@pytest.mark.parametrize("gate", ["energy", "speech", "none"])
@pytest.mark.parametrize("packet", [16000 * 4, 20000, 5000])
@pytest.mark.parametrize("close_at", [None, 4.73])
def test_a_merged_window_owns_the_frames_of_the_windows_it_replaces(
    gate: str, packet: int, close_at: float | None
) -> None:
    audio = signal(9.0)
    single = windows_of(audio, 1, gate, packet=packet, close_at=close_at)
    merged = windows_of(audio, 4, gate, packet=packet, close_at=close_at)
    assert owned_frames(merged) == owned_frames(single)  # no gap, no overlap, same order
    # chunks wait only when a packet brings more than one: then they merge
    assert any(w.owned > CHUNK_FRAMES for w in merged) == (packet >= 2 * LAYOUT.chunk)
    assert all(w.owned <= 4 * CHUNK_FRAMES for w in merged if not w.final)
    by_first = {(w.generation, w.first_frame): w for w in single}
    for w in merged:
        first = by_first[(w.generation, w.first_frame)]
        if w.owned <= CHUNK_FRAMES:
            assert (w.start, w.end, w.kind, w.final) == (first.start, first.end, first.kind, first.final)
            continue
        # k chunks: the first one's left context, the last one's look-ahead; all of them ran the model
        k = w.owned // CHUNK_FRAMES
        last = by_first[(w.generation, w.first_frame + (k - 1) * CHUNK_FRAMES)]
        replaced = [by_first[(w.generation, w.first_frame + i * CHUNK_FRAMES)] for i in range(k)]
        assert w.owned == k * CHUNK_FRAMES and not w.final
        assert (w.start, w.owned_offset, w.end) == (first.start, first.owned_offset, last.end)
        assert all(r.kind is WindowKind.FEATURES for r in replaced) and w.kind is WindowKind.FEATURES
        assert (w.frames_from, w.frames_to) == (first.frames_from, last.frames_to)
        # the last owned frame sees all its samples
        assert w.origin + (w.first_frame + w.owned - 1) * GEO.stride + GEO.receptive_field <= w.end


@pytest.mark.parametrize("gate", ["energy", "speech"])
def test_gated_chunks_are_never_merged(gate: str) -> None:
    merged = windows_of(signal(9.0), 4, gate, packet=16000 * 9)
    skipped = [w for w in merged if w.gated]
    assert skipped and all(w.owned <= CHUNK_FRAMES for w in skipped)


def test_one_chunk_per_window_is_todays_layout() -> None:
    audio = signal(9.0)
    today = windows_of(audio, 1, "energy", packet=16000 * 9)
    assert all(w.owned <= CHUNK_FRAMES or w.final for w in today)
    assert [(w.start, w.end, w.kind) for w in today] == [
        (w.start, w.end, w.kind) for w in windows_of(audio, 1, "energy", packet=777)
    ]


def test_the_merged_window_carries_the_same_normalized_audio() -> None:
    """Full-window path: its samples are the stream normalized by the running statistics up to its end."""
    audio = signal(6.0)
    buffer = RingBuffer(16000 * 30)
    chunker = Chunker(GEO, LAYOUT, buffer, normalization="running", energy_gate_dbfs=None)
    buffer.append(audio)
    first = chunker.next_window(4)
    assert first is not None and first.owned == 4 * CHUNK_FRAMES and first.samples is not None
    seen = audio[: first.end].astype(np.float64)
    expected = (audio[first.start : first.end] - seen.mean()) / math.sqrt(seen.var() + 1e-7)
    np.testing.assert_allclose(first.samples, expected, atol=1e-4)


# -- the engine --------------------------------------------------------------------------------------


def recording_windows(stream: RecognitionStream) -> list[Window]:
    """The windows the scheduler takes from ``stream`` from now on."""
    taken: list[Window] = []
    take = stream.take_windows

    def record(aligned: int | None) -> list[Window]:
        out = take(aligned)
        taken.extend(out)
        return out

    stream.take_windows = record  # type: ignore[method-assign]
    return taken


def catch_up_settings(tiny: Path, max_chunks: int = 4) -> config.Settings:
    s = make_settings(tiny)
    s.endpoint.energy_gate_dbfs = -math.inf  # babble's pauses are digital silence: run every window
    s.streaming.max_chunks_per_window = max_chunks
    return s


def test_catch_up_engages_only_when_the_worker_is_late(tiny_dir: Path) -> None:  # noqa: F811
    eng = RecognitionEngine(catch_up_settings(tiny_dir))  # no worker: the rounds run here
    stream = eng.open_stream(lambda _: None)
    taken = recording_windows(stream)
    stream.accept(babble(3.0))  # a burst the worker takes at once: one window per chunk
    eng.scheduler.run_round()
    assert len(taken) == 5 and all(w.owned == CHUNK_FRAMES for w in taken)
    taken.clear()
    stream.accept(babble(3.0, seed=1))
    time.sleep(0.6)  # the worker comes more than a chunk (0.5 s) late
    eng.scheduler.run_round()
    assert [w.owned // CHUNK_FRAMES for w in taken] == [4, 2]
    assert eng.scheduler.stats.windows == 7


def test_max_chunks_one_keeps_one_window_per_chunk_when_late(tiny_dir: Path) -> None:  # noqa: F811
    eng = RecognitionEngine(catch_up_settings(tiny_dir, max_chunks=1))
    stream = eng.open_stream(lambda _: None)
    taken = recording_windows(stream)
    stream.accept(babble(3.0))
    time.sleep(0.6)
    eng.scheduler.run_round()
    assert len(taken) == 5 and all(w.owned == CHUNK_FRAMES for w in taken)


def always_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every window counts as late: catch-up wherever whole chunks wait."""
    monkeypatch.setattr(WindowQueue, "_late", lambda self, arrival_of: True)


def test_the_synchronous_path_never_merges(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    audio = babble(8.0)
    one = RecognitionEngine(catch_up_settings(tiny_dir, max_chunks=1)).transcribe_stream(audio, 32000)
    always_late(monkeypatch)
    four = RecognitionEngine(catch_up_settings(tiny_dir)).transcribe_stream(audio, 32000)
    assert one and [(f.text, f.start, f.end) for f in four] == [(f.text, f.start, f.end) for f in one]


@dataclasses.dataclass
class LateRun:
    text: str  # the Finals' text
    windows: int  # windows that ran the model
    best: dict[int, int]  # segment frame -> its argmax token, as merged


def stream_late(engine: RecognitionEngine, audio: np.ndarray, every_s: float = 2.0) -> LateRun:
    """``audio`` taken by a late worker: ``every_s`` of audio arrives per round."""
    finals: list[Final] = []
    stream = engine.open_stream(lambda e: finals.append(e) if isinstance(e, Final) else None)
    taken = recording_windows(stream)
    best: dict[int, int] = {}
    consume = stream.consume

    def record(window: Window, log_probs: np.ndarray | None) -> None:
        owned = range(window.first_frame, window.first_frame + window.owned)
        assert window.generation == 0 and not best.keys() & set(owned)  # each frame once
        tokens = [0] * window.owned if log_probs is None else log_probs.argmax(axis=1)[window.owned_offset :]
        best.update(zip(owned, (int(t) for t in tokens[: window.owned]), strict=True))
        consume(window, log_probs)

    stream.consume = record  # type: ignore[method-assign]
    step = int(every_s * 16000)
    for pos in range(0, len(audio), step):
        stream.accept(audio[pos : pos + step])
        engine.scheduler.run_round([stream])
    stream.end()
    while engine.scheduler.run_round([stream]):
        pass
    assert sorted(best) == list(range(engine.geometry.num_frames(len(audio))))  # no gap
    text = " ".join(f.text for f in finals if f.text)
    return LateRun(text, sum(w.kind is not WindowKind.GATED and w.owned > 0 for w in taken), best)


def test_catch_up_on_a_tiny_model_keeps_the_frames_close(
    tiny_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A random model's frames change a little with more context; the seams lose or repeat none."""
    always_late(monkeypatch)
    audio = babble(12.0)
    single = stream_late(RecognitionEngine(catch_up_settings(tiny_dir, 1)), audio)
    merged = stream_late(RecognitionEngine(catch_up_settings(tiny_dir, 4)), audio)
    assert merged.windows < single.windows / 2
    agree = np.mean([merged.best[f] == token for f, token in single.best.items()])
    assert agree >= 0.9, agree


def wer(hypothesis: str | list[str], reference: str | list[str]) -> float:
    """Lists are pooled: one WER over all their words."""
    import jiwer

    return float(jiwer.wer(reference, hypothesis))


@pytest.mark.slow
@pytest.mark.skipif(shipped_model_dir() is None, reason="the embedded model is missing")
def test_catch_up_keeps_the_embedded_models_wer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Speech streamed by a late worker: with catch-up, WER against the true text within a point."""
    import importlib.util
    import sys

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("bench_streaming", root / "bench" / "bench_streaming.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_streaming", bench)
    spec.loader.exec_module(bench)
    clips = [bench.synthesize_speech(30.0, seed=seed) for seed in (5, 6)]  # ~185 words in all
    always_late(monkeypatch)
    settings = config.Settings()
    engine = RecognitionEngine(settings)

    def run(max_chunks: int) -> list[LateRun]:
        engine.set_streaming(dataclasses.replace(settings.streaming, max_chunks_per_window=max_chunks))
        return [stream_late(engine, audio) for audio, _ in clips]

    single, merged = run(1), run(4)
    assert sum(r.windows for r in merged) < 0.6 * sum(r.windows for r in single)
    truths = [truth for _, truth in clips]
    single_wer = wer([r.text for r in single], truths)
    merged_wer = wer([r.text for r in merged], truths)
    assert merged_wer <= single_wer + 0.01, (merged_wer, single_wer)


BAD: list[tuple[object, str]] = [
    (0, "1-16"),
    (-2, "1-16"),
    (17, "1-16"),
    (2.5, "integer"),
    ('"four"', "four"),
]


@pytest.mark.parametrize(("value", "message"), BAD)
def test_bad_max_chunks_fail_at_load(tmp_path: Path, value: object, message: str) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text(f"[streaming]\nmax_chunks_per_window = {value}\n")
    with pytest.raises(ValueError, match="max_chunks_per_window") as error:
        config.load_toml(toml)
    assert message in str(error.value)


def test_max_chunks_default_and_help() -> None:
    assert config.Settings().streaming.max_chunks_per_window == 4
    assert "1 = one window per chunk" in config.describe(config.Settings().streaming, "max_chunks_per_window")
