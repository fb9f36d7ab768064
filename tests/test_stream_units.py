"""Streaming data path, stage by stage, without a model: PCM, ring buffer, windows, CTC merge, endpoints."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.ctc import greedy_collapse
from streamer.ctc_merge import CtcMerger, Vocabulary
from streamer.endpointing import Endpointer
from streamer.latency import ArrivalTimes
from streamer.pcm import AudioFormatError, PcmDecoder, decode
from streamer.ring_buffer import RingBuffer, RingBufferOverflow
from streamer.windowing import Chunker, FrameGeometry, WindowLayout, loudness_dbfs

GEO = FrameGeometry()


# -- pcm -------------------------------------------------------------------------------------------


def test_decode_s16le_and_f32le() -> None:
    ints = np.array([0, 16384, -32768, 32767], dtype="<i2")
    assert np.allclose(decode(ints.tobytes(), "pcm_s16le"), ints / 32768.0)
    floats = np.array([0.0, 0.5, -1.0], dtype="<f4")
    assert np.array_equal(decode(floats.tobytes(), "f32le"), floats)
    assert np.allclose(decode(ints), ints / 32768.0)  # arrays by dtype
    assert decode(floats.astype(np.float64)[:, None]).dtype == np.float32


@pytest.mark.parametrize(
    ("data", "encoding", "message"),
    [
        (b"\x00\x01\x02", "pcm_s16le", "multiple of 2 bytes"),
        (b"\x00" * 6, "f32le", "multiple of 4 bytes"),
        (np.array([0.0, np.nan], dtype=np.float32).tobytes(), "f32le", "NaN/Inf"),
        (np.array([np.inf], dtype=np.float32), "pcm_s16le", "NaN/Inf"),
        (np.array([1000.0], dtype=np.float32), "f32le", "must lie in"),
        (b"\x00\x00", "mp3", "unknown encoding"),
        (np.zeros((2, 10), dtype=np.float32), "f32le", "1-D mono"),
        (np.zeros(4, dtype=np.int32), "f32le", "int16 or floating"),
        ("text", "f32le", "bytes or a numpy array"),
    ],
)
def test_decode_rejects_bad_audio(data: object, encoding: str, message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        decode(data, encoding)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, -16000, 1, 10_000_000, 16000.5, True, "16000"])
def test_absurd_sample_rates(rate: object) -> None:
    with pytest.raises(AudioFormatError, match="sample_rate"):
        PcmDecoder(rate)  # type: ignore[arg-type]
    assert issubclass(AudioFormatError, ValueError)


def test_resampling_decoder_keeps_duration() -> None:
    dec = PcmDecoder(8000, "pcm_s16le")
    tone = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 10000).astype("<i2")
    out = [dec.push(tone[i : i + 333].tobytes()) for i in range(0, 8000, 333)]
    total = sum(len(o) for o in out) + len(dec.flush())
    assert abs(total - 16000) <= 2


# -- ring buffer -----------------------------------------------------------------------------------


def test_ring_buffer_wraps_and_bounds() -> None:
    rb = RingBuffer(10)
    data = np.arange(100, dtype=np.float32)
    pos = 0
    for n in [3, 4, 2, 7, 5, 9]:
        rb.discard_before(rb.end - 1)
        rb.append(data[pos : pos + n])
        pos += n
        assert np.array_equal(rb.read(rb.start, rb.end), data[rb.start : rb.end])
    with pytest.raises(RingBufferOverflow):
        rb.append(np.zeros(11, dtype=np.float32))
    with pytest.raises(IndexError):
        rb.read(0, 1)
    assert rb._data.nbytes == 40


# -- windows ---------------------------------------------------------------------------------------


def test_geometry_from_released_config() -> None:
    class Cfg:
        conv_kernel = (10, 3, 3, 3, 3, 2, 2)
        conv_stride = (5, 2, 2, 2, 2, 2, 2)

    geo = FrameGeometry.from_config(Cfg())
    assert (geo.stride, geo.receptive_field) == (320, 400)
    for n in [0, 399, 400, 719, 720, 16000, 16399, 16400]:
        expected = 0 if n < 400 else (n - 400) // 320 + 1
        assert geo.num_frames(n) == expected


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(0, 40_000),
    left=st.integers(0, 8),
    chunk=st.integers(1, 12),
    lookahead=st.integers(0, 8),
    pieces=st.lists(st.integers(1, 9000), min_size=1, max_size=20),
    resets=st.lists(st.integers(0, 40_000), max_size=2),
)
def test_windows_own_every_frame_once(total, left, chunk, lookahead, pieces, resets) -> None:
    """Whatever the arrival chunking, each segment's owned frames are exactly its offline frames."""
    layout = WindowLayout.from_seconds(GEO, left * 0.02 * 5, chunk * 0.02 * 3, lookahead * 0.02 * 4)
    assert layout.lookahead >= GEO.receptive_field - GEO.stride
    rb = RingBuffer(layout.window * 2 + 10_000)
    ch = Chunker(GEO, layout, rb, energy_gate_dbfs=None)
    audio = np.random.default_rng(total).standard_normal(total).astype(np.float32)
    windows = []
    pos, i = 0, 0
    cuts = sorted(set(resets))
    while pos < total:
        n = min(pieces[i % len(pieces)], total - pos, rb.free)
        if cuts and pos <= cuts[0] < pos + n:
            n = max(cuts[0] - pos, 0)
            cuts.pop(0)
            rb.append(audio[pos : pos + n])
            pos += n
            ch.close_segment()
        else:
            rb.append(audio[pos : pos + n])
            pos += n
        i += 1
        while (w := ch.next_window()) is not None:
            windows.append(w)
    ch.close_segment(eos=True)
    while (w := ch.next_window()) is not None:
        windows.append(w)
        if w.eos:
            break
    assert windows[-1].eos and windows[-1].final
    segments: dict[int, list] = {}
    for w in windows:
        segments.setdefault(w.generation, []).append(w)
    covered = 0
    for ws in segments.values():
        origin = ws[0].origin
        assert ws[-1].final and sum(w.final for w in ws) == 1
        seg_end = ws[-1].end if ws[-1].owned else None
        frames = []
        for w in ws:
            assert (w.start - origin) % GEO.stride == 0 and w.start >= origin
            if w.owned:
                assert w.samples is not None and len(w.samples) == w.end - w.start
                assert w.owned_offset + w.owned <= GEO.num_frames(w.end - w.start)
                if not w.final:  # full look-ahead: the last owned frame sees all its samples
                    last = origin + (w.first_frame + w.owned - 1) * GEO.stride + GEO.receptive_field
                    assert last <= w.end
                frames.extend(range(w.first_frame, w.first_frame + w.owned))
        if seg_end is not None:
            assert frames == list(range(GEO.num_frames(seg_end - origin)))
        covered += len(frames)
    assert covered <= GEO.num_frames(total) + len(segments)


def test_energy_gate_skips_silence() -> None:
    layout = WindowLayout.from_seconds(GEO, 0.4, 0.4, 0.2)
    rb = RingBuffer(layout.window * 4)
    ch = Chunker(GEO, layout, rb, energy_gate_dbfs=-60.0)
    quiet = np.full(16000, 1e-4, dtype=np.float32)  # -80 dBFS
    rb.append(quiet)
    windows = []
    while (w := ch.next_window()) is not None:
        windows.append(w)
    assert windows and all(w.gated and w.samples is None for w in windows)
    assert loudness_dbfs(quiet) == pytest.approx(-80.0, abs=0.01)
    assert loudness_dbfs(np.zeros(5, np.float32)) == -math.inf


# -- CTC merge -------------------------------------------------------------------------------------

TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "|", "a", "b", "c"]
VOCAB = Vocabulary(TOKENS, blank_id=0, delimiter_id=4, silent_ids={1, 2, 3})


def one_hot(ids: list[int]) -> np.ndarray:
    lp = np.full((len(ids), len(TOKENS)), -10.0, dtype=np.float32)
    lp[np.arange(len(ids)), ids] = -0.01
    return lp


def merger(min_silence_s: float = math.inf, max_utt: float = math.inf) -> CtcMerger:
    return CtcMerger(VOCAB, frame_seconds=0.02, endpointer=Endpointer(min_silence_s, max_utt, 0.02))


def text_of(ids: list[int]) -> str:
    return " ".join("".join(VOCAB.char(i) for i in greedy_collapse(np.array(ids), 0)).split())


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(st.sampled_from([0, 0, 0, 4, 5, 5, 6, 7, 3]), min_size=1, max_size=300),
    seams=st.lists(st.integers(1, 299), max_size=12),
    min_silence=st.sampled_from([math.inf, 0.1, 0.3]),
)
def test_merge_across_seams_equals_whole_decode(ids, seams, min_silence) -> None:
    """Carrying the last label across seams = collapsing the concatenated frames once; endpoints only cut."""
    m = merger(min_silence)
    cuts = [0, *sorted({s for s in seams if s < len(ids)}), len(ids)]
    utterances = []
    lp = one_hot(ids)
    for a, b in itertools.pairwise(cuts):
        utterances += m.push(lp[a:b], a, b - a)
    last = m.finish()
    utterances += [last] if last else []
    streamed = " ".join(u.text for u in utterances if u.text)
    if min_silence == math.inf:  # no endpointing: exactly the whole-sequence decode, words and times
        assert streamed == text_of(ids)
        whole = merger()
        whole.push(lp, 0, len(ids))
        ref = whole.finish()
        words = [(w.word, w.start, w.end) for u in utterances for w in u.words]
        assert words == ([(w.word, w.start, w.end) for w in ref.words] if ref else [])
    else:  # an endpoint inside a long blank run may split a delimiter-less word; nothing else changes
        assert streamed.replace(" ", "") == text_of(ids).replace(" ", "")


def test_repeats_at_seam_and_word_times() -> None:
    m = merger()
    ids = [5, 5, 0, 5, 4, 6, 6, 6, 7, 0]  # "aa" (blank between) | "bc"
    lp = one_hot(ids)
    m.push(lp[:2], 0, 2)
    committed, tentative, start = m.partial(lp[2:5])
    assert (committed, tentative, start) == ("", "aa", 0.0)
    m.push(lp[2:6], 2, 4)
    m.push(lp[6:], 6, 4)
    u = m.finish()
    assert u.text == "aa bc"
    assert [(w.word, w.start, w.end) for w in u.words] == [("aa", 0.0, 0.08), ("bc", 0.1, 0.18)]
    assert 0.9 < u.words[0].confidence <= 1.0


def test_partial_start_is_a_real_time_even_with_only_lookahead_text() -> None:
    """No utterance yet: the start is the first tentative character's frame (never NaN, which is not JSON)."""
    m = merger()
    m.push(one_hot([0, 0, 4, 0]), 0, 4)  # blanks and a delimiter: no utterance open
    assert m.utt_first_frame is None
    committed, tentative, start = m.partial(one_hot([0, 4, 0, 6, 6, 0, 7]))
    assert (committed, tentative) == ("", "bc")
    assert start == 0.14  # look-ahead frame 3 is segment frame 4 + 3 = 7, 20 ms each
    # no text at all: a zero-length span at the end of the merged frames
    assert m.partial(one_hot([0, 4])) == ("", "", 0.08)
    assert m.partial(None) == ("", "", 0.08)
    # an open utterance: its first character's frame, whatever the look-ahead says
    m = merger()
    m.push(one_hot([0, 5]), 0, 2)
    assert m.partial(one_hot([0, 6])) == ("", "ab", 0.02)
    # after the endpointer closed an utterance, the next one's look-ahead start counts from next_frame
    m = merger(min_silence_s=0.04)
    assert [u.text for u in m.push(one_hot([5, 4, 0, 0, 0]), 0, 5)] == ["a"]
    assert m.utt_first_frame is None
    assert m.partial(one_hot([0, 7, 7])) == ("", "c", 0.12)


def test_endpointer_closes_after_silence_and_at_max_length() -> None:
    m = merger(min_silence_s=0.1)
    ids = [5, 4, 0, 0, 0, 0, 0, 0, 6, 0]
    done = m.push(one_hot(ids), 0, len(ids))
    assert [u.text for u in done] == ["a"]
    assert m.finish().text == "b"
    m = merger(max_utt=0.1)  # 5 frames: cut at the first word boundary after that
    ids = [5, 6, 5, 6, 5, 6, 4, 7, 7, 4, 5]
    done = m.push(one_hot(ids), 0, len(ids))
    assert [u.text for u in done] == ["ababab"]
    assert m.finish().text == "c a"


def test_heap_trimmer_runs_at_most_once_per_period() -> None:
    from streamer.memory import HeapTrimmer

    never = HeapTrimmer(0.0)
    assert not never.maybe_trim() and never.trims == 0
    trimmer = HeapTrimmer(0.05)
    if not trimmer.available:
        pytest.skip("this libc has no malloc_trim")
    assert not trimmer.maybe_trim()  # the period starts at construction
    time.sleep(0.06)
    assert trimmer.maybe_trim() and not trimmer.maybe_trim()
    assert trimmer.trims == 1


def test_arrival_times_find_the_chunk_that_brought_a_position() -> None:
    arrivals = ArrivalTimes(limit=4)
    for end, at in [(100, 1.0), (250, 2.0), (400, 3.0)]:
        arrivals.note(end, at)
    assert [arrivals.of(p) for p in (0, 100, 101, 250, 400, 401)] == [1.0, 1.0, 2.0, 2.0, 3.0, None]
    arrivals.note(500, 4.0)
    arrivals.note(600, 5.0)  # over the limit: the oldest half goes
    assert [arrivals.of(p) for p in (100, 450, 600)] == [3.0, 4.0, 5.0]
