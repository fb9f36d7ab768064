"""Streaming vs offline recognition with the shipped model on >= 60 s of synthesized multi-sentence speech.

Acceptance (the criterion users care about): on the same audio, the streamed finals' WER against the true
text is within 1 point of the offline transcript's WER against the true text, with the default window
layout: on one-voice clips and on 4-voice concatenations (four clips each, pooled, because a single
~180-word clip scatters by several points), and on 80 s of a held-out voice through the vosk port in
lockstep. Guards that hold for any sane streaming: no word duplicated or dropped at seams (chunks 0.25-2 s),
word times within 60 ms of the offline CTC alignment. Skipped when the embedded model
(model/pretrained/en-small) or a synthesizer is missing. Figures: docs/RESULTS.md, "Streamed vs offline WER".
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shipped_model_dir

from streamer.config import Settings
from streamer.engine import RecognitionEngine
from streamer.events import Final

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # the module's fixtures stream minutes of audio on 2 cores
    pytest.mark.skipif(
        shipped_model_dir() is None, reason="the embedded model (model/pretrained/en-small) is missing"
    ),
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
def speech_and_text() -> tuple[np.ndarray, str]:
    """62 s of sentences, four flite voices in turn (kal16, awb, slt, and rms, which the model never heard)."""
    audio, text = _bench().synthesize_speech(62.0, seed=3)
    assert len(audio) >= 60 * 16000
    return audio, text


@pytest.fixture(scope="module")
def speech(speech_and_text) -> np.ndarray:
    return speech_and_text[0]


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


def wer(hypothesis: str, reference: str) -> float:
    import jiwer

    return float(jiwer.wer(reference, hypothesis))


WER_POINTS = 0.01  # streamed WER may exceed offline WER (both against the true text) by at most 1 point


def assert_streamed_wer_near_offline(
    streamed: str | list[str], offline: str | list[str], truth: str | list[str], what: str
) -> None:
    """Lists are pooled: one WER over all their words."""
    streamed_wer, offline_wer = wer(streamed, truth), wer(offline, truth)
    log.info("%s: streamed WER %.2f%% vs offline %.2f%%", what, 100 * streamed_wer, 100 * offline_wer)
    assert streamed_wer <= offline_wer + WER_POINTS, (
        f"{what}: streamed WER {streamed_wer:.2%} vs offline {offline_wer:.2%} (bound: +1 point)",
        streamed,
        offline,
    )


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
    """A guard on the time base of finals (docs/RESULTS.md, "Streamed word times"): a stream-time offset or
    a frame-rate error moves every word."""
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


DEFAULT_CHUNK_S = Settings().streaming.chunk_s


FOUR_VOICE_MORE_SEEDS = (4, 5, 6)


def truth_offline_streamed(
    engine: RecognitionEngine, seconds: float, seed: int, voices: list[str] | None = None
) -> tuple[str, str, str]:
    """One synthesized clip: its true text, the offline transcript and the streamed finals' text."""
    audio, truth = _bench().synthesize_speech(seconds, seed=seed, voices=voices)
    return truth, engine.transcribe(audio).text, streamed_text(engine.transcribe_stream(audio, 1600))


def test_4_voice_streamed_wer_within_a_point_of_offline(
    engine, speech_and_text, offline, stream_finals
) -> None:
    """Four 62 s concatenations (seeds 3-6), pooled: one clip has ~185 words, so two words are a point and
    single clips scatter by +-1.6 points around the pooled difference (docs/RESULTS.md)."""
    clips = [(speech_and_text[1], offline.text, streamed_text(stream_finals(DEFAULT_CHUNK_S)))]
    clips += [truth_offline_streamed(engine, 62.0, seed) for seed in FOUR_VOICE_MORE_SEEDS]
    truths, offlines, streams = (list(texts) for texts in zip(*clips, strict=True))
    assert_streamed_wer_near_offline(streams, offlines, truths, "4 voices, 4 clips")


ONE_VOICES = ("kal16", "awb", "slt")  # flite voices the model trained on
CHUNKS_S = (0.25, 0.5, 1.0, 2.0)


@pytest.fixture(scope="module")
def one_voice_runs(engine) -> dict[str, tuple[Final, dict[float, list[Final]], str]]:
    """voice -> (offline transcript, chunk_s -> streamed finals, true text) of 60 s of sentences in one voice (seed 0;
    kal16's is the audio of the committed streaming plot, docs/streaming_tradeoffs.png)."""
    if not shutil.which("flite"):
        pytest.skip("flite not installed")
    runs = {}
    for voice in ONE_VOICES:
        audio, truth = _bench().synthesize_speech(60.0, seed=0, voices=[voice])
        offline = engine.transcribe(audio)
        assert len(offline.text.split()) >= 100, offline.text
        finals = {chunk_s: stream_in_chunks(engine, audio, chunk_s) for chunk_s in CHUNKS_S}
        runs[voice] = (offline, finals, truth)
    return runs


@pytest.mark.parametrize("voice", ONE_VOICES)
def test_one_voice_streams_have_no_seam_errors(one_voice_runs, voice: str) -> None:
    """A guard that holds with the interim model, far above its context noise: a seam that drops or repeats
    frames repeats or loses text at every chunk (hundreds per minute) and shifts every later word's time.
    The bounds sit well above what the shipped models reach (docs/RESULTS.md, "Streamed word times")."""
    offline, finals_by_chunk, _ = one_voice_runs[voice]
    for chunk_s, finals in finals_by_chunk.items():
        streamed = streamed_text(finals)
        assert cer(streamed, offline.text) <= 0.05, (chunk_s, streamed, offline.text)
        ref = offline.text.split()
        assert dropped_or_duplicated_words(ref, streamed.split()) <= 0.05 * len(ref), (chunk_s, streamed)
        errors = matched_word_time_errors(offline, finals)
        assert len(errors) >= 0.85 * len(ref), chunk_s
        assert sum(e <= 0.06 + 1e-6 for e in errors) >= 0.95 * len(errors), (chunk_s, sorted(errors)[-10:])


ONE_VOICE_MORE_SEEDS = (1, 2, 3)


@pytest.mark.parametrize("voice", ONE_VOICES)
def test_one_voice_streamed_wer_within_a_point_of_offline(engine, one_voice_runs, voice: str) -> None:
    """Four 60 s clips per voice (seeds 0-3), pooled, as for the 4-voice clips: one clip has ~180 words, and
    single clips scatter by -4 to +3.4 points around a pooled difference of -1.6 to +0.1 (slt seed 0 alone is
    +3.4; docs/RESULTS.md, "Streamed vs offline WER")."""
    offline, finals_by_chunk, truth = one_voice_runs[voice]
    clips = [(truth, offline.text, streamed_text(finals_by_chunk[DEFAULT_CHUNK_S]))]
    clips += [truth_offline_streamed(engine, 60.0, seed, [voice]) for seed in ONE_VOICE_MORE_SEEDS]
    truths, offlines, streams = (list(texts) for texts in zip(*clips, strict=True))
    assert_streamed_wer_near_offline(streams, offlines, truths, f"{voice}, 4 clips")


def test_threaded_engine_matches_the_synchronous_stream(speech_and_text, stream_finals) -> None:
    """Two streams at once through the engine's worker thread (cross-stream batches, 0.2 s packets) lose
    nothing against the same audio streamed alone: WER against the true text within 1 point."""
    speech, truth = speech_and_text
    alone = streamed_text(stream_finals(DEFAULT_CHUNK_S))
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
            assert wer(text, truth) <= wer(alone, truth) + WER_POINTS, (text, alone)
    finally:
        eng.stop()


HELD_OUT_VOICE = "rms"  # flite's rms: an evaluation-only voice (model.training.synthesis.EVAL_VOICES)


async def vosk_lockstep_text(port: int, pcm: bytes, frame_s: float = 0.2) -> str:
    """vosk-server's test.py exchange: config, one reply per 0.2 s frame, eof; the results' text, joined."""
    import json

    from websockets.asyncio.client import connect

    texts = []
    async with connect(f"ws://127.0.0.1:{port}") as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        step = 2 * int(16000 * frame_s)
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i : i + step])
            texts.append(json.loads(await ws.recv()).get("text", ""))
        await ws.send('{"eof" : 1}')  # byte-exact, as vosk-server (and this daemon) compare it
        texts.append(json.loads(await ws.recv()).get("text", ""))
    return " ".join(t for t in texts if t)


# The vosk port writes lower case (as vosk's English models do), the offline text and the truth are upper
# case: WER is compared case-folded. One 80 s clip (~215 words) scatters by several points, so seeds 1-4 are
# pooled, as the other streamed-vs-offline tests pool theirs. With 0.5 s of look-ahead stage 15 streamed the
# held-out voice 2.1 points worse than offline pooled; the default 1 s brings it to +0.7 (docs/RESULTS.md,
# "Window layout for a voice the model never heard"), and this test fails again with the old layout.
HELD_OUT_SEEDS = (1, 2, 3, 4)


def test_held_out_voice_80s_through_the_vosk_port_wer_within_a_point_of_offline(engine) -> None:
    """80 s of sentences in a voice the model never trained on, through a real server's vosk port in
    lockstep (the daemon's default settings), against `transcribe` on the same 16-bit audio; four clips,
    pooled."""
    import asyncio

    from streamer.server.testing import running_app

    if not shutil.which("flite"):
        pytest.skip("flite not installed")
    clips = []
    for seed in HELD_OUT_SEEDS:
        audio, truth = _bench().synthesize_speech(80.0, seed=seed, voices=[HELD_OUT_VOICE])
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        same_audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32767
        clips.append((pcm, truth, engine.transcribe(same_audio).text))

    settings = Settings()
    settings.server.host, settings.server.port, settings.server.vosk_port = "127.0.0.1", 0, 0
    server_engine = RecognitionEngine(settings)
    server_engine.start()

    async def stream() -> list[str]:
        async with running_app(settings, server_engine) as app:
            return [await vosk_lockstep_text(app.vosk_port, pcm) for pcm, _, _ in clips]

    try:
        streamed = asyncio.run(stream())
    finally:
        server_engine.stop()
    for text in streamed:
        assert len(text.split()) >= 100, text
        assert text == text.lower(), "the vosk port writes lower case"
    truths, offlines = [truth for _, truth, _ in clips], [offline for _, _, offline in clips]
    per_clip = [
        f"{100 * (wer(t.upper(), truth) - wer(o, truth)):+.2f}"
        for t, truth, o in zip(streamed, truths, offlines, strict=True)
    ]
    assert_streamed_wer_near_offline(
        [t.upper() for t in streamed],
        offlines,
        truths,
        f"80 s of {HELD_OUT_VOICE} via vosk, per clip {per_clip}",
    )
