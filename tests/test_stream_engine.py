"""RecognitionEngine end to end with a tiny random Wav2Vec2-Conformer (no trained model needed).

A random model recognizes nothing useful, but everything that must hold for ANY model is checked here:
frame geometry, chunking invariance, event protocol, overload policies, error isolation, bounded memory.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.config import Settings
from streamer.engine import RecognitionEngine
from streamer.events import EndOfStream, Final, Partial, StreamError
from streamer.pcm import AudioFormatError
from streamer.server.testing import TINY_CONFIG

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from model import Wav2Vec2ConformerConfig, Wav2Vec2ConformerForCTC

    out = tmp_path_factory.mktemp("tiny-stream-model")
    # the tests' tiny model with relative positions (the streaming windows' hardest case), post-norm
    config = Wav2Vec2ConformerConfig(
        vocab_size=len(VOCAB),
        **{
            **TINY_CONFIG,
            "num_attention_heads": 4,
            "conv_dim": (8, 8, 8, 8, 8, 8, 16),
            "num_conv_pos_embedding_groups": 4,
            "do_stable_layer_norm": False,
            "position_embeddings_type": "relative",
        },
    )
    torch.manual_seed(0)
    Wav2Vec2ConformerForCTC(config).eval().save_pretrained(out)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"pad_token": "<pad>", "word_delimiter_token": "|"})
    )
    return out


def make_settings(model_dir: Path, **streaming: float) -> Settings:
    s = Settings()
    s.model.path = str(model_dir)
    s.streaming.left_context_s = streaming.get("left", 1.0)
    s.streaming.chunk_s = streaming.get("chunk", 0.5)
    s.streaming.lookahead_s = streaming.get("lookahead", 0.3)
    s.batching.max_batch = 8
    s.batching.max_wait_ms = 5
    # The synthetic signals here are not speech: the energy gate lets them reach the model (the speech gate
    # has its own tests in tests/test_vad.py).
    s.streaming.vad = "energy"
    return s


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> RecognitionEngine:
    s = make_settings(tiny_dir)
    s.streaming.normalization = "window"  # the full-window path; running_engine covers the cached one
    eng = RecognitionEngine(s)
    assert not eng.cache_features
    return eng


def babble(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: bursts of shaped noise and tones separated by pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    x = np.zeros(n, dtype=np.float32)
    pos = 0
    while pos < n:
        burst = int(rng.uniform(0.3, 2.0) * 16000)
        t = np.arange(min(burst, n - pos)) / 16000
        tone = np.sin(2 * np.pi * rng.uniform(100, 300) * t) * 0.2
        x[pos : pos + len(t)] = (tone + rng.standard_normal(len(t)) * 0.05) * np.hanning(len(t))
        pos += burst + int(rng.uniform(0.1, 0.9) * 16000)
    return x


def test_frame_geometry_matches_the_model(engine: RecognitionEngine) -> None:
    assert (engine.geometry.stride, engine.geometry.receptive_field) == (320, 400)
    for n in (400, 719, 720, 16000, 16399):
        frames = engine.backend(np.zeros((1, n), dtype=np.float32)).shape[1]
        assert frames == engine.geometry.num_frames(n)


@pytest.fixture(scope="module")
def running_engine(tiny_dir: Path) -> RecognitionEngine:
    s = make_settings(tiny_dir)
    s.streaming.normalization = "running"
    eng = RecognitionEngine(s)
    assert eng.cache_features
    return eng


def test_cached_features_equal_window_features(running_engine: RecognitionEngine) -> None:
    """The premise of feature caching: a layer-norm feature encoder's frames do not depend on the window."""
    x = babble(3.0, seed=7)[: 320 * 100 + 80]
    whole = running_engine.backend.features(x[None]).numpy()[0]
    part = running_engine.backend.features(x[None, 320 * 37 : 320 * 60 + 80]).numpy()[0]
    assert whole.shape == (100, running_engine.config.conv_dim[-1]) and part.shape[0] == 23
    np.testing.assert_allclose(part, whole[37:60], atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("which", ["engine", "running_engine"])
def test_random_chunk_sizes_give_identical_output(which: str, request: pytest.FixtureRequest) -> None:
    engine = request.getfixturevalue(which)
    audio = babble(12.0)
    audio[3 * 16000 : 5 * 16000] = 0  # a pause long enough for the energy gate to skip windows
    reference = engine.transcribe_stream(audio)
    assert reference and all(f.text for f in reference)
    rng = np.random.default_rng(1)
    for sizes in (4000, [int(v) for v in rng.integers(1, 30000, 50)], [7, 123457, 999]):
        finals = engine.transcribe_stream(audio, sizes)
        assert finals == [
            Final(f.stream_id, r.text, r.words, r.start, r.end)
            for f, r in zip(finals, reference, strict=True)
        ]
    # int16 input at another rate goes through decoding + resampling and still gives finals.
    pcm = (babble(3.0)[::2] * 32767).astype(np.int16)
    engine.transcribe_stream(pcm, 1234, sample_rate=8000)


def test_threaded_streams_events_and_isolation(tiny_dir: Path) -> None:
    eng = RecognitionEngine(make_settings(tiny_dir))
    audio = babble(8.0, seed=3)
    offline_like = " ".join(f.text for f in eng.transcribe_stream(audio))
    eng.start()
    try:
        logs: list[list] = [[] for _ in range(4)]
        streams = [eng.open_stream(log.append) for log in logs]
        pcm = (audio * 32767).astype("<i2").tobytes()
        for i in range(0, len(pcm), 3200):
            for s in streams:
                s.accept(pcm[i : i + 3200])
        for s in streams:
            s.end()
        for s in streams:
            assert s.done.wait(60)
        for log in logs:
            assert isinstance(log[-1], EndOfStream)
            assert not any(isinstance(e, StreamError) for e in log)
            text = " ".join(e.text for e in log if isinstance(e, Final))
            # Batch composition may change float rounding, never the transcript of a healthy seam merge.
            assert abs(len(text) - len(offline_like)) <= max(2, len(offline_like) // 50)
            committed, prev_start = "", None
            for e in log:
                if isinstance(e, Partial):
                    assert e.committed.startswith(committed) or e.start != prev_start
                    committed, prev_start = e.committed, e.start
                elif isinstance(e, Final):
                    committed = ""
        with pytest.raises(AudioFormatError):
            eng.open_stream(lambda e: None).accept(b"\x01")
        stats = eng.stats()
        assert stats.windows > 0 and stats.batches > 0 and stats.latency_samples
    finally:
        eng.stop()


def test_forward_failure_fails_only_that_batch(tiny_dir: Path) -> None:
    eng = RecognitionEngine(make_settings(tiny_dir))
    assert eng.cache_features  # default path: feature encoder, then encoder on cached features
    real = eng.backend.encode
    calls = {"n": 0}

    def flaky(features):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(features)

    eng.backend.encode = flaky
    eng.start()
    try:
        first: list = []
        s1 = eng.open_stream(first.append)
        s1.accept(babble(2.0))
        assert s1.done.wait(30)
        assert isinstance(first[-1], StreamError) and first[-1].code == "internal" and first[-1].fatal
        second: list = []
        s2 = eng.open_stream(second.append)
        s2.accept(babble(2.0))
        s2.end()
        assert s2.done.wait(30) and isinstance(second[-1], EndOfStream)
        assert eng.scheduler.running
    finally:
        eng.stop()


def test_reset_close_and_overload_policies(tiny_dir: Path) -> None:
    s = make_settings(tiny_dir)
    s.endpoint.energy_gate_dbfs = -200.0
    s.limits.max_queued_s = 2.0
    eng = RecognitionEngine(s)
    events: list = []
    st = eng.open_stream(events.append)
    st.accept(babble(1.5))
    st.accept(babble(1.5))  # 3 s queued > 2 s: the oldest is dropped
    eng.scheduler.run_round()
    errors = [e for e in events if isinstance(e, StreamError)]
    assert errors and errors[0].code == "overload" and not errors[0].fatal
    st.reset()
    st.accept(babble(1.0))
    st.end()
    while eng.scheduler.run_round():
        pass
    assert isinstance(events[-1], EndOfStream)
    assert [e.start for e in events if isinstance(e, Final)] == sorted(
        e.start for e in events if isinstance(e, Final)
    )

    s.limits.overload_policy = "close"
    eng = RecognitionEngine(s)
    events = []
    st = eng.open_stream(events.append)
    st.accept(babble(3.0))
    eng.scheduler.run_round()
    assert isinstance(events[-1], StreamError) and events[-1].fatal and events[-1].code == "overload"
    assert st.done.is_set() and eng.stats().active_streams == 0

    events = []
    st = eng.open_stream(events.append)
    st.accept(babble(1.0))
    st.close()
    eng.scheduler.run_round()
    assert events == [] and eng.stats().active_streams == 0


def test_when_idle_resolves_once_the_events_of_the_audio_so_far_are_out(tiny_dir: Path) -> None:
    eng = RecognitionEngine(make_settings(tiny_dir))  # no worker: the rounds run here
    events: list = []
    st = eng.open_stream(events.append)
    assert st.is_idle() and st.when_idle().done()
    st.accept(babble(0.3))  # short of a window: it waits for more audio, not for the engine
    assert st.is_idle() and st.when_idle().done()
    st.accept(babble(2.0))
    pending = st.when_idle()
    assert not pending.done() and not st.is_idle()
    at_resolution: list[int] = []
    pending.add_done_callback(lambda _: at_resolution.append(len(events)))
    eng.scheduler.run_round()
    assert pending.done() and st.is_idle()
    assert at_resolution == [len(events)] and any(isinstance(e, Partial) for e in events)
    st.end()
    finished = st.when_idle()
    assert not finished.done()
    while eng.scheduler.run_round():
        pass
    assert finished.done() and isinstance(events[-1], EndOfStream)


def test_split_forward_equals_the_whole_forward(tiny_dir: Path) -> None:
    """The cached-feature path's two halves (feature encoder, then the rest) give the model's output."""
    import torch

    from model import Wav2Vec2ConformerForCTC
    from streamer.backend import ConformerBackend, CtcBackend, backend_for

    x = np.random.default_rng(0).standard_normal((2, 8000)).astype(np.float32)
    ours = backend_for(Wav2Vec2ConformerForCTC.from_pretrained(tiny_dir))
    assert isinstance(ours, ConformerBackend) and ours.can_split
    expected = ours(x)
    np.testing.assert_allclose(ours.encode(ours.features(x)), expected, atol=1e-5)

    class Logits(torch.nn.Module):  # any CTC model: whole windows only
        def forward(self, x: torch.Tensor) -> Any:
            return type("Output", (), {"logits": x[:, :10, None].repeat(1, 1, 3)})()

    plain = backend_for(Logits())
    assert type(plain) is CtcBackend and not plain.can_split and plain(x).shape == (2, 10, 3)
    with pytest.raises(NotImplementedError):
        plain.features(x)

    transformers = pytest.importorskip("transformers")
    theirs = backend_for(transformers.Wav2Vec2ConformerForCTC.from_pretrained(tiny_dir))
    assert type(theirs).__name__ == "TransformersConformerBackend" and theirs.can_split
    np.testing.assert_allclose(theirs(x), expected, atol=1e-4)
    np.testing.assert_allclose(theirs.encode(theirs.features(x)), expected, atol=1e-4)


def test_int8_quantized_model_runs(tiny_dir: Path) -> None:
    s = make_settings(tiny_dir)
    s.model.quantize = "int8"
    eng = RecognitionEngine(s)
    eng.transcribe_stream(babble(3.0), 8000)


def test_memory_flat_over_one_hour(tiny_dir: Path) -> None:
    """1 h of mostly quiet audio (energy gate) with a burst every 2 minutes: memory does not grow."""
    s = make_settings(tiny_dir, left=0.5, chunk=2.0, lookahead=0.3)
    eng = RecognitionEngine(s)
    st = eng.open_stream(lambda e: None)
    minute = np.full(60 * 16000, 1e-5, dtype=np.float32)
    burst = babble(0.8, seed=5)

    def feed(minutes: int) -> None:
        for m in range(minutes):
            block = minute.copy()
            if m % 2 == 0:
                block[16000 : 16000 + len(burst)] = burst
            for i in range(0, len(block), 80000):
                st.accept(block[i : i + 80000])
                eng.scheduler.run_round()

    feed(6)  # warm up: caches, allocator pools
    tracemalloc.start()
    try:
        feed(2)
        before = tracemalloc.get_traced_memory()[0]
        feed(52)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 256 * 1024, f"grew by {after - before} bytes over 52 minutes"
    assert (
        len(st.intake.buffer) <= st.intake.buffer.capacity
        and st.intake.buffer._data.nbytes == st.intake.buffer.capacity * 4
    )
    assert eng.stats().gated_windows > 1000


def test_worker_survives_callback_exceptions(tiny_dir: Path) -> None:
    eng = RecognitionEngine(make_settings(tiny_dir))
    eng.start()
    try:
        seen = threading.Event()

        def bad(event: object) -> None:
            seen.set()
            raise ValueError("client bug")

        st = eng.open_stream(bad)
        st.accept(babble(2.0))
        st.end()
        assert st.done.wait(30) and seen.is_set()
        time.sleep(0.05)
        assert eng.scheduler.running
    finally:
        eng.stop()


def test_beam_search_finals(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """decoder.method=beam: partials stay greedy, finals come from a beam search over the utterance frames."""
    pytest.importorskip("pyctcdecode")
    monkeypatch.setattr("streamer.beam.find_lm", lambda model_path: None)  # LM-free: fast, deterministic
    s = make_settings(tiny_dir)
    s.decoder.method = "beam"
    s.decoder.beam_width = 4
    eng = RecognitionEngine(s)
    events: list = []
    finals = eng.transcribe_stream(babble(4.0, seed=9), 3000, on_event=events.append)
    assert isinstance(events[-1], EndOfStream) and any(isinstance(e, Partial) for e in events)
    for f in finals:
        assert f.text == " ".join(w.word for w in f.words)
        assert all(f.start - 0.5 <= w.start <= w.end <= f.end + 0.5 for w in f.words)


def test_auto_decoder_is_beam_only_with_the_models_own_lm(tiny_dir: Path, tmp_path: Path) -> None:
    """decoder.method=auto (the default): greedy for a model without an LM, even when the training
    cache has one; beam with the LM shipped in the model's directory when the lm extra is installed."""
    import shutil

    from model.training import lm
    from streamer.beam import resolve_decoder

    assert Settings().decoder.method == "auto"
    assert RecognitionEngine(make_settings(tiny_dir)).beam is None
    assert resolve_decoder("auto", None, str(tiny_dir))[:2] == ("greedy", None)
    assert resolve_decoder("greedy", None, str(tiny_dir))[0] == "greedy"
    with pytest.raises(ValueError, match="decoder method"):
        resolve_decoder("viterbi", None, str(tiny_dir))

    with_lm = tmp_path / "with-lm"
    shutil.copytree(tiny_dir, with_lm)
    lm.build_arpa(["hello world", "hello there"], with_lm / "lm.arpa.gz", order=2)
    assert resolve_decoder("auto", "none", str(with_lm))[:2] == ("greedy", None)  # --lm none
    assert resolve_decoder("beam", "none", str(with_lm))[:2] == ("beam", None)  # a plain beam search
    method, lm_path, why = resolve_decoder("auto", None, str(with_lm))
    if importlib.util.find_spec("pyctcdecode") is None or importlib.util.find_spec("kenlm") is None:
        assert (method, lm_path) == ("greedy", None) and "not installed" in why
        return
    assert (method, lm_path) == ("beam", str(with_lm / "lm.arpa.gz"))
    s = make_settings(with_lm)
    s.decoder.beam_width = 4
    eng = RecognitionEngine(s)
    assert eng.beam is not None
    finals = eng.transcribe_stream(babble(3.0, seed=3), 4000)
    assert all(f.text == " ".join(w.word for w in f.words) for f in finals)

    # a broken LM file: auto falls back to greedy (the daemon still starts), an explicit beam fails loudly
    (with_lm / "lm.arpa.gz").write_bytes(b"not an ARPA file")
    assert RecognitionEngine(make_settings(with_lm)).beam is None
    s.decoder.method = "beam"
    with pytest.raises(OSError):
        RecognitionEngine(s)


def test_beam_word_times_are_stream_times(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beam finals carry stream times, as greedy ones do: a streamed utterance that starts after 2 s of
    silence (gated) has its words after 2 s; words lie inside their final's span, streamed and offline."""
    pytest.importorskip("pyctcdecode")
    monkeypatch.setattr("streamer.beam.find_lm", lambda model_path: None)
    audio = np.concatenate([np.zeros(32000, dtype=np.float32), babble(4.0, seed=9)])
    finals: dict[str, list[Final]] = {}
    for method in ("greedy", "beam"):
        s = make_settings(tiny_dir)
        s.decoder.method = method
        s.decoder.beam_width = 8
        s.decoder.min_word_confidence = 0.0  # a random model's letters are all unsure: keep its words
        eng = RecognitionEngine(s)
        finals[method] = [*eng.transcribe_stream(audio, 3000), eng.transcribe(audio)]
    for method, results in finals.items():
        streamed = [w for f in results[:-1] for w in f.words]
        assert streamed and min(w.start for w in streamed) >= 1.0, method  # not from 0
        for f in results:
            assert all(f.start - 0.06 <= w.start <= w.end <= f.end + 0.06 for w in f.words), (method, f)
    for greedy, beam in zip(finals["greedy"], finals["beam"], strict=True):
        if greedy.text == beam.text:  # the same words: the same times, within a frame or two
            for g, b in zip(greedy.words, beam.words, strict=True):
                assert abs(g.start - b.start) <= 0.06 and abs(g.end - b.end) <= 0.06, (g, b)


def test_offline_reference_windows_long_recordings(engine: RecognitionEngine) -> None:
    """Up to 15 s one forward; beyond, 15 s windows whose kept frames tile the recording once."""
    short = babble(4.0, seed=5)
    assert np.array_equal(engine.offline_log_probs(short), engine.log_probs(short))
    long = babble(40.0, seed=6)
    windowed = engine.offline_log_probs(long)
    assert windowed.shape == (engine.geometry.num_frames(len(long)), len(engine.vocab.raw_tokens))
    whole = engine.log_probs(long)
    assert windowed.shape == whole.shape and not np.allclose(windowed, whole)  # other context, other numbers
    head = engine.log_probs(long[: 15 * 16000])
    assert np.allclose(windowed[:100], head[:100], atol=1e-5)  # the first window's frames are its own
