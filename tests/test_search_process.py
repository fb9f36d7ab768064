"""The finals' beam search in a child process (`streamer.search_process`): same results as in the thread,
survives its child dying, reports a broken LM at start, and stops with the engine."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyctcdecode")
pytest.importorskip("kenlm")

from streamer.beam import UtteranceBeamSearch, model_lm
from streamer.config import Settings
from streamer.ctc_merge import Vocabulary
from streamer.search_process import BeamSearchProcess, SearchProcessError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def log_probs_and_vocab() -> tuple[np.ndarray, Vocabulary]:
    """The embedded model's (frames, vocab) log-probs of the hello-world recording, and its vocabulary."""
    from model.audio import load_audio
    from model.hub import default_model_dir
    from model.tokenizer import Wav2Vec2CTCTokenizer
    from model.training.evaluation import load_model, log_probs

    model, _ = load_model(None)
    audio = load_audio(str(ROOT / "tests" / "data" / "hello_world.wav"), 16000)
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(default_model_dir()))
    return log_probs(model, audio), Vocabulary.from_tokenizer(tokenizer)


@pytest.fixture
def search(log_probs_and_vocab) -> BeamSearchProcess:
    process = BeamSearchProcess(log_probs_and_vocab[1], Settings().decoder, model_lm(None))
    yield process
    process.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_same_results_as_the_search_in_the_thread(log_probs_and_vocab, search: BeamSearchProcess) -> None:
    lp, vocab = log_probs_and_vocab
    in_thread = UtteranceBeamSearch(vocab, Settings().decoder, model_lm(None))
    for start, hotwords in ((0.0, []), (1.5, []), (0.0, [("HELLO", 8.0)])):
        expected = in_thread.decode_frames(lp, start, 0.02, hotwords)
        assert expected[0], "the embedded model hears words in hello_world.wav"
        assert search.decode_frames(lp, start, 0.02, hotwords) == expected


def test_the_child_imports_no_torch(search: BeamSearchProcess) -> None:
    """The child must stay light: ``model`` loads its torch-backed exports lazily."""
    assert search.pid is not None
    maps = Path(f"/proc/{search.pid}/maps").read_text()
    assert "kenlm" in maps  # the search itself is loaded there
    assert "libtorch" not in maps


def test_a_dead_child_is_replaced_and_the_request_answered(log_probs_and_vocab, search) -> None:
    lp, _ = log_probs_and_vocab
    expected = search.decode_frames(lp, 0.0, 0.02)
    first = search.pid
    os.kill(first, signal.SIGKILL)
    assert search.decode_frames(lp, 0.0, 0.02) == expected
    assert search.pid not in (None, first)


def test_a_child_that_cannot_be_replaced_leaves_the_search_in_the_thread(
    log_probs_and_vocab, search, monkeypatch: pytest.MonkeyPatch
) -> None:
    lp, _ = log_probs_and_vocab
    expected = search.decode_frames(lp, 0.0, 0.02)
    child = search.pid

    def fail() -> None:
        raise SearchProcessError("cannot start")

    monkeypatch.setattr(search, "_start", fail)
    os.kill(child, signal.SIGKILL)
    assert search.decode_frames(lp, 0.0, 0.02) == expected  # answered in this thread
    assert search.pid is None
    assert search.decode_frames(lp, 0.0, 0.02) == expected


def test_a_broken_lm_fails_at_start_with_the_builders_error(log_probs_and_vocab, tmp_path: Path) -> None:
    broken = tmp_path / "lm.arpa"
    broken.write_text("this is not an ARPA file\n")
    with pytest.raises((OSError, RuntimeError, ValueError)):
        BeamSearchProcess(log_probs_and_vocab[1], Settings().decoder, str(broken))


def test_the_engine_runs_its_finals_search_in_a_child_and_stops_it() -> None:
    from streamer.engine import RecognitionEngine

    engine = RecognitionEngine(Settings())
    search = engine.beam
    assert isinstance(search, BeamSearchProcess)
    child = search.pid
    assert child is not None and _alive(child)
    engine.start()
    engine.stop()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)

    settings = Settings()
    settings.decoder.search_process = False
    assert isinstance(RecognitionEngine(settings).beam, UtteranceBeamSearch)
