"""Streaming vs offline recognition with the shipped model on >= 60 s of synthesized multi-sentence speech.

Acceptance: for chunk sizes 0.25-2 s the streamed finals equal the offline transcript of the same audio
within 1% CER, with no word duplicated or dropped at seams; word times within 60 ms of the offline CTC
alignment. Skipped when the embedded model (model/pretrained/en-small) or a synthesizer is missing.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.config import Settings
from streamer.engine import RecognitionEngine
from streamer.events import Final

ROOT = Path(__file__).resolve().parent.parent


def _model_dir() -> Path | None:
    try:
        from model import default_model_dir
    except ImportError:
        return None
    path = Path(default_model_dir())
    return path if (path / "config.json").is_file() else None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_model_dir() is None, reason="the embedded model is not shipped yet"),
    pytest.mark.skipif(
        not (shutil.which("espeak-ng") or shutil.which("flite")), reason="no speech synthesizer"
    ),
]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_streaming", ROOT / "bench" / "bench_streaming.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_streaming", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    audio, _ = _bench().synthesize_speech(62.0, seed=3)
    assert len(audio) >= 60 * 16000
    return audio


# The interim en-small model (held-out greedy CER 25%) is so unsure that a different context flips many
# characters. Streamed vs offline CER on this audio (4 voices in turn), chunk 0.25 / 0.5 / 1 / 2 s, stage-5
# model (session 6): 0.062 / 0.067 / 0.058 / 0.051 with the default decoder (beam + the model's LM), 0.058 /
# 0.058 / 0.054 / 0.043 greedy (stage 4: 0.079 / 0.076 / 0.082 / 0.051 and 0.079 / 0.066 / 0.066 / 0.059),
# the offline reference going through 15 s windows as `transcribe` does. Most of it is the one voice the
# model never heard (flite rms): per voice at chunk 0.5 / 1 s, greedy, kal16 / awb / slt 0.024-0.032, rms
# 0.17-0.19; beam 0.004-0.033 and 0.26. Two offline layouts (12 s vs 15 s windows) already disagree by
# 0.026 (greedy). Stage 11 (session 9), default decoder: 0.052 / 0.059 / 0.060 / 0.041. The acceptance bound
# of issue 4 (1%) stays; strict, so these start failing as soon as a shipped model meets it (then drop this).
INTERIM_MODEL = pytest.mark.xfail(
    reason="interim en-small: streamed vs offline CER 0.04-0.07 (issue 4 bound: 0.01)",
    strict=True,
    raises=AssertionError,
)


@pytest.fixture(scope="module")
def engine() -> RecognitionEngine:
    return RecognitionEngine(Settings())


@pytest.fixture(scope="module")
def offline(engine: RecognitionEngine, speech: np.ndarray) -> Final:
    result = engine.transcribe(speech)
    assert len(result.text.split()) >= 40, f"the model recognizes too little to compare: {result.text!r}"
    return result


def cer(hypothesis: str, reference: str) -> float:
    import jiwer

    return float(jiwer.cer(reference, hypothesis))


def stream_in_chunks(engine: RecognitionEngine, audio: np.ndarray, chunk_s: float) -> list[Final]:
    """The Finals of streaming ``audio`` (0.1 s packets) with windows of ``chunk_s``, the engine's other
    streaming settings kept, and restored afterwards."""
    default = dataclasses.replace(engine.settings.streaming)
    engine.set_streaming(dataclasses.replace(default, chunk_s=chunk_s))
    try:
        return engine.transcribe_stream(audio, 1600)
    finally:
        engine.set_streaming(default)


def streamed_text(finals: list[Final]) -> str:
    return " ".join(f.text for f in finals if f.text)


@pytest.fixture(scope="module")
def stream_finals(engine, speech):
    """chunk_s -> the Finals of streaming the speech with that chunk size (each computed once)."""
    cache: dict[float, list[Final]] = {}

    def finals(chunk_s: float) -> list[Final]:
        if chunk_s not in cache:
            cache[chunk_s] = stream_in_chunks(engine, speech, chunk_s)
        return cache[chunk_s]

    return finals


def matched_word_time_errors(offline: Final, finals: list[Final]) -> list[float]:
    """Start/end distance (s) of each streamed word to the offline word it aligns with (same word)."""
    words = [w for f in finals for w in f.words]
    matcher = difflib.SequenceMatcher(
        a=[w.word for w in offline.words], b=[w.word for w in words], autojunk=False
    )
    return [
        max(abs(a.start - b.start), abs(a.end - b.end))
        for block in matcher.get_matching_blocks()
        for a, b in zip(
            offline.words[block.a : block.a + block.size], words[block.b : block.b + block.size], strict=True
        )
    ]


@pytest.mark.parametrize("chunk_s", [0.25, 0.5, 1.0, 2.0])
def test_streamed_word_times_follow_the_offline_alignment(offline, stream_finals, chunk_s: float) -> None:
    """Holds with the interim model too (measured 97-100% of the matched words within 60 ms, p95 20-40 ms,
    greedy and beam): a guard on the time base of finals while the strict bounds below wait for a better
    model. A stream-time offset or a frame-rate error moves every word."""
    errors = sorted(matched_word_time_errors(offline, stream_finals(chunk_s)))
    assert len(errors) >= 0.5 * len(offline.words)
    assert sum(e <= 0.06 for e in errors) >= 0.9 * len(errors), errors[-10:]


def dropped_or_duplicated_words(ref: list[str], hyp: list[str]) -> int:
    """Words without a counterpart: inserted or deleted words, and the word-count difference of a replaced
    span unless the two spans spell nearly the same letters (a word split or joined, "TO DAY" / "TODAY",
    "ROTHINKING" / "ROE THINKING", is a spelling difference, not a dropped or repeated word)."""
    count = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_opcodes():
        if tag in ("insert", "delete"):
            count += (i2 - i1) + (j2 - j1)
        elif tag == "replace":
            letters = difflib.SequenceMatcher(a="".join(ref[i1:i2]), b="".join(hyp[j1:j2]), autojunk=False)
            if letters.ratio() < 0.8:
                count += abs((i2 - i1) - (j2 - j1))
    return count


def test_dropped_or_duplicated_words_counts_words_not_spellings() -> None:
    ref = ["THE", "WEATHER", "TO", "DAY", "IS", "COLD", "AND", "WINDY"]
    assert dropped_or_duplicated_words(ref, ref) == 0
    assert dropped_or_duplicated_words(ref, ["THE", "WEATHER", "TODAY", "IS", "COLD", "AND", "WINDY"]) == 0
    assert (
        dropped_or_duplicated_words(ref, ["THE", "WEATHER", "TO", "DAY", "IS", "IS", "COLD", "AND", "WINDY"])
        == 1
    )
    assert dropped_or_duplicated_words(ref, ["THE", "WEATHER", "TO", "DAY", "IS", "AND", "WINDY"]) == 1
    assert (
        dropped_or_duplicated_words(ref, ["THE", "WEATHER", "TO", "DAY", "IS", "HOT", "AND", "WINDY"]) == 0
    )  # a substitution
    assert (
        dropped_or_duplicated_words(
            ref, ["THE", "WEATHER", "TO", "DAY", "IS", "CALM", "QUITE", "AND", "WINDY"]
        )
        == 1
    )


def assert_streamed_matches_offline(offline: Final, finals: list[Final]) -> None:
    streamed = streamed_text(finals)
    assert cer(streamed, offline.text) <= 0.01, (streamed, offline.text)
    # No duplicated or dropped words at seams.
    ref = offline.text.split()
    assert dropped_or_duplicated_words(ref, streamed.split()) <= max(1, len(ref) // 100)
    # Word times within 60 ms of the offline CTC alignment (words that match).
    assert max(matched_word_time_errors(offline, finals)) <= 0.06 + 1e-6  # times are rounded to 1 ms


@INTERIM_MODEL
@pytest.mark.parametrize("chunk_s", [0.25, 0.5, 1.0, 2.0])
def test_streamed_finals_match_offline(offline, stream_finals, chunk_s: float) -> None:
    assert_streamed_matches_offline(offline, stream_finals(chunk_s))


ONE_VOICES = ("kal16", "awb", "slt")  # flite voices the model trained on
CHUNKS_S = (0.25, 0.5, 1.0, 2.0)


@pytest.fixture(scope="module")
def one_voice_runs(engine) -> dict[str, tuple[Final, dict[float, list[Final]]]]:
    """voice -> (offline transcript, chunk_s -> streamed finals) of 60 s of sentences in one voice (seed 0;
    kal16's is the audio of the committed streaming plot, docs/streaming_tradeoffs.png)."""
    if not shutil.which("flite"):
        pytest.skip("flite not installed")
    runs = {}
    for voice in ONE_VOICES:
        audio, _ = _bench().synthesize_speech(60.0, seed=0, voices=[voice])
        offline = engine.transcribe(audio)
        assert len(offline.text.split()) >= 100, offline.text
        runs[voice] = (offline, {chunk_s: stream_in_chunks(engine, audio, chunk_s) for chunk_s in CHUNKS_S})
    return runs


@pytest.mark.parametrize("voice", ONE_VOICES)
def test_one_voice_streams_have_no_seam_errors(one_voice_runs, voice: str) -> None:
    """A guard that holds with the interim model, far above its context noise: a seam that drops or repeats
    frames repeats or loses text at every chunk (hundreds per minute) and shifts every later word's time.
    Measured with stage 5 and stage 7 (session 8), worst over the voices and chunk sizes: CER 2.97% vs
    offline, 4 of 181 words dropped or repeated, 92% of the offline words matched, 99% of those within 60 ms;
    stage 11 (session 9): CER 3.57% (slt), 5 words, 90% matched, every matched word within 60 ms."""
    offline, finals_by_chunk = one_voice_runs[voice]
    for chunk_s, finals in finals_by_chunk.items():
        streamed = streamed_text(finals)
        assert cer(streamed, offline.text) <= 0.05, (chunk_s, streamed, offline.text)
        ref = offline.text.split()
        assert dropped_or_duplicated_words(ref, streamed.split()) <= 0.05 * len(ref), (chunk_s, streamed)
        errors = matched_word_time_errors(offline, finals)
        assert len(errors) >= 0.85 * len(ref), chunk_s
        assert sum(e <= 0.06 + 1e-6 for e in errors) >= 0.95 * len(errors), (chunk_s, sorted(errors)[-10:])


# Issue 4's bound on one voice at a time. Stage 5 (session 8) meets all of it on kal16 (CER 0.93 / 0.52 / 0.52 /
# 0.72% at chunk 0.25 / 0.5 / 1 / 2 s) but not on awb (0.90-2.13%) or slt (1.76-2.97%, 2-4 words dropped or
# repeated, words up to 100 ms off); on six more clips of these voices (bench/stream_agreement.py) 6 of 24 runs
# are within 1%. The kal16 clip alone used to be the test: a lucky draw, not the model's behaviour. Stage 11
# (session 9): kal16 1.03-1.44%, awb 1.56-2.46%, slt 3.01-3.57%, though 10 of those 24 other runs are within 1%.
ONE_VOICE_BOUND = pytest.mark.xfail(
    reason="interim en-small: streamed vs offline CER up to 3.6% on one-voice clips (issue 4 bound: 1%)",
    strict=True,
    raises=AssertionError,
)


@ONE_VOICE_BOUND
def test_one_voice_streamed_finals_match_offline(one_voice_runs) -> None:
    failures = []
    for voice, (offline, finals_by_chunk) in one_voice_runs.items():
        for chunk_s, finals in finals_by_chunk.items():
            try:
                assert_streamed_matches_offline(offline, finals)
            except AssertionError:
                failures.append(
                    f"{voice} chunk {chunk_s} s: CER {cer(streamed_text(finals), offline.text):.2%}"
                )
    assert not failures, failures


@INTERIM_MODEL
def test_threaded_engine_matches_offline(speech, offline) -> None:
    # The audio arrives all at once: room for all of it, or the overload policy (rightly) drops the oldest.
    settings = Settings()
    settings.streaming.buffer_s = settings.limits.max_queued_s = 2 * len(speech) / 16000
    eng = RecognitionEngine(settings)
    eng.start()
    try:
        logs: list[list] = [[], []]
        streams = [eng.open_stream(log.append) for log in logs]
        pcm = (speech * 32767).astype("<i2").tobytes()
        for i in range(0, len(pcm), 6400):
            for s in streams:
                s.accept(pcm[i : i + 6400])
        for s in streams:
            s.end()
        for s, log in zip(streams, logs, strict=True):
            assert s.done.wait(300)
            text = " ".join(e.text for e in log if isinstance(e, Final) and e.text)
            assert cer(text, offline.text) <= 0.01
    finally:
        eng.stop()
