"""``conformer-streamer transcribe``: windowing, decoding, word timings and the command line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from model.audio import load_audio
from model.feature_extraction import Wav2Vec2FeatureExtractor
from model.processor import Wav2Vec2Processor
from model.tokenizer import Wav2Vec2CTCTokenizer
from streamer import cli
from streamer.commands import transcribe
from streamer.commands.transcribe import Recognizer, Transcription, Word
from streamer.offline import offline_windows
from streamer.server.testing import TINY_CONFIG

DATA = __import__("pathlib").Path(__file__).parent / "data"
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "A": 5, "B": 6, "C": 7}


def _processor(normalize: bool = True) -> Wav2Vec2Processor:
    return Wav2Vec2Processor(
        Wav2Vec2FeatureExtractor(do_normalize=normalize, return_attention_mask=True),
        Wav2Vec2CTCTokenizer(VOCAB, do_lower_case=True),
    )


def _peaked(ids: list[int], vocab_size: int = len(VOCAB), peak: float = 0.9) -> torch.Tensor:
    """Log-probabilities with probability ``peak`` on the given id of each frame."""
    probs = torch.full((len(ids), vocab_size), (1 - peak) / (vocab_size - 1))
    probs[torch.arange(len(ids)), torch.tensor(ids)] = peak
    return probs.log()


class FrameLocalNetwork(torch.nn.Module):
    """Strided convolution shaped like Wav2Vec2's encoder (400-sample receptive field, 320 stride).

    Each frame sees only its own samples, so windowed inference must reproduce whole-file output.
    """

    def __init__(self) -> None:
        super().__init__()
        # float64, so that convolution algorithms chosen per input length agree to well below tolerance
        self.conv = torch.nn.Conv1d(1, len(VOCAB), kernel_size=400, stride=320, dtype=torch.float64)
        torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, input_values, attention_mask=None):
        logits = self.conv(input_values[:, None].double()).transpose(1, 2)
        return type("Output", (), {"logits": logits})


@pytest.mark.parametrize("context_s", [0.0, 0.2])
def test_window_layout_tiles_every_frame_once(context_s):
    for seconds in (0.7, 1.0, 2.33, 5.0, 7.91):
        num_samples = int(seconds * 16000)
        total_frames = (num_samples - 400) // 320 + 1
        kept = []
        for start, stop, keep_from, keep_to in offline_windows(
            num_samples, 320, 16000, 1.0, context_s, whole_limit_s=0.5
        ):
            assert start % 320 == 0 and stop - start <= 16000
            local_frames = (stop - start - 400) // 320 + 1
            kept += [start // 320 + i for i in range(local_frames)[keep_from:keep_to]]
        assert kept == list(range(total_frames)), seconds
    assert list(offline_windows(16000 * 15, 320, 16000)) == [(0, 16000 * 15, 0, sys.maxsize)]  # one pass


def test_windowed_log_probs_equal_whole_file_for_frame_local_model():
    recognizer = Recognizer(
        FrameLocalNetwork(), _processor(normalize=False), torch.device("cpu"), torch.float32
    )
    audio = np.random.default_rng(0).normal(size=int(4.3 * 16000)).astype(np.float32)
    whole = transcribe.frame_log_probs(audio, recognizer)
    windowed = transcribe.frame_log_probs(
        audio, recognizer, whole_file_limit_s=1.0, window_s=1.0, context_s=0.2
    )
    assert windowed.shape == whole.shape
    torch.testing.assert_close(windowed, whole, rtol=1e-5, atol=1e-5)


def test_greedy_decode_words_times_and_confidence():
    tokenizer = _processor().tokenizer
    # blank, A A, blank, B, |, C C C, blank
    log_probs = _peaked([0, 5, 5, 0, 6, 4, 7, 7, 7, 0])
    log_probs[7] = _peaked([7], peak=0.6)[0]
    result = transcribe.greedy_decode(log_probs, tokenizer, 0.02)
    assert result.text == "ab c"
    assert [(w.word, w.start, w.end) for w in result.words] == [("ab", 0.02, 0.1), ("c", 0.12, 0.18)]
    assert result.words[0].confidence == pytest.approx(0.9, abs=1e-4)
    assert result.words[1].confidence == pytest.approx((0.9 + 0.6 + 0.9) / 3, abs=1e-4)


def test_beam_decode_agrees_with_greedy_on_confident_frames():
    pytest.importorskip("pyctcdecode")
    tokenizer = _processor().tokenizer
    log_probs = _peaked([0, 5, 5, 0, 6, 4, 4, 7, 0, 7, 1, 0])
    greedy = transcribe.greedy_decode(log_probs, tokenizer, 0.02)
    search = transcribe.make_beam_search(tokenizer, beam_width=4)
    beam = transcribe.beam_decode(log_probs, tokenizer, 0.02, search)
    assert beam.text == greedy.text == "ab cc"
    # pyctcdecode places word boundaries only approximately (within a couple of frames).
    assert [w.word for w in beam.words] == [w.word for w in greedy.words]
    for beam_word, greedy_word in zip(beam.words, greedy.words, strict=True):
        assert (
            abs(beam_word.start - greedy_word.start) <= 0.04 and abs(beam_word.end - greedy_word.end) <= 0.04
        )


def test_json_line_format():
    line = Transcription("ab", [Word("ab", 0.1, 0.3, 0.75)]).to_json("x.wav")
    assert json.loads(line) == {
        "file": "x.wav",
        "text": "ab",
        "words": [{"word": "ab", "start": 0.1, "end": 0.3, "confidence": 0.75}],
    }


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A randomly initialised, tiny Wav2Vec2-Conformer CTC model in Hugging Face layout."""
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("tiny-model")
    config = transformers.Wav2Vec2ConformerConfig(vocab_size=len(VOCAB), **TINY_CONFIG)
    torch.manual_seed(0)
    transformers.Wav2Vec2ConformerForCTC(config).save_pretrained(directory)
    _processor().save_pretrained(directory)
    return directory


def test_cli_prints_one_json_object_per_file(tiny_model, capsys):
    files = [
        DATA / "hello_world.wav",
        DATA / "quick_brown_fox_stereo44k.ogg",
        DATA / "testing_one_two_three.flac",
    ]
    assert cli.main(["transcribe", "--model", str(tiny_model), "--json", *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line, file in zip(lines, files, strict=True):
        record = json.loads(line)
        assert record["file"] == str(file) and isinstance(record["text"], str)
        assert " ".join(w["word"] for w in record["words"]) == record["text"]
        duration = 3.3 if "fox" in file.name else 2.1
        for word in record["words"]:
            assert 0 <= word["start"] < word["end"] <= duration and 0 < word["confidence"] <= 1


def test_cli_plain_text_reports_unreadable_files(tiny_model, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nonsense" * 20)
    wav = str(DATA / "hello_world.wav")
    assert cli.main(["transcribe", "--model", str(tiny_model), wav, str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{wav}\t") and len(captured.out.splitlines()) == 1
    assert "bad.wav" in captured.err


def test_bfloat16_and_beam_run_end_to_end(tiny_model, capsys):
    pytest.importorskip("pyctcdecode")
    wav = str(DATA / "hello_world.wav")
    assert (
        cli.main(["transcribe", "--model", str(tiny_model), "--dtype", "bfloat16", "--decoder", "beam", wav])
        == 0
    )
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_int8_quantization_is_cpu_only():
    with pytest.raises(ValueError, match="CPU"):
        transcribe.load_recognizer("unused", device="cuda", quantize="int8")


def test_log_probs_and_text_match_a_transformers_pipeline(tiny_model):
    """Same file through transformers' feature extractor + model + tokenizer gives the same result."""
    import transformers

    recognizer = transcribe.load_recognizer(tiny_model)
    audio = load_audio(DATA / "hello_world.wav")
    ours = transcribe.frame_log_probs(audio, recognizer)

    hf_processor = transformers.Wav2Vec2Processor.from_pretrained(str(tiny_model))
    hf_model = transformers.Wav2Vec2ConformerForCTC.from_pretrained(str(tiny_model)).eval()
    inputs = hf_processor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        theirs = torch.log_softmax(hf_model(**inputs).logits[0], dim=-1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)

    ids = theirs.argmax(-1)
    ids[torch.isin(ids, torch.tensor([1, 2, 3]))] = 0  # <s>, </s>, <unk> read as blank
    expected = " ".join(hf_processor.decode(ids).split())
    assert transcribe.greedy_decode(ours, recognizer.processor.tokenizer, 0.02).text == expected


def test_int8_quantized_model_transcribes(tiny_model, capsys):
    pytest.importorskip("model.quantize")
    wav = str(DATA / "hello_world.wav")
    assert cli.main(["transcribe", "--model", str(tiny_model), "--quantize", "int8", "--json", wav]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == wav


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_audio_shorter_than_one_frame_gives_empty_text(decoder):
    if decoder == "beam":
        pytest.importorskip("pyctcdecode")
    recognizer = Recognizer(FrameLocalNetwork(), _processor(), torch.device("cpu"), torch.float32)
    for length in (1, 399):
        result = transcribe.transcribe_audio(np.ones(length, dtype=np.float32), recognizer, decoder=decoder)
        assert result == Transcription(text="")


def test_beam_decoder_uses_the_word_lm(tmp_path, capsys):
    """``--decoder beam --lm`` with the embedded model: an LM that knows the sentence fixes the spelling
    that greedy decoding gets wrong; ``--lm none`` is a plain beam search."""
    import shutil
    import subprocess

    from model import default_model_dir
    from model.training import lm

    pytest.importorskip("kenlm")
    if not shutil.which("flite") or not (default_model_dir() / "model.safetensors").exists():
        pytest.skip("needs flite and the embedded model")
    sentence = "THE WEATHER IS NICE TODAY"
    wav = tmp_path / "s.wav"
    subprocess.run(["flite", "-voice", "kal16", "-t", sentence.lower(), "-o", str(wav)], check=True)
    corpus = [sentence, "THE WEATHER WAS COLD YESTERDAY", "IT IS NICE TO SEE YOU", "TODAY IS THE DAY"]
    arpa = lm.build_arpa(corpus * 3, tmp_path / "lm.arpa", order=3)

    def run(*extra: str) -> str:
        assert cli.main(["transcribe", *extra, str(wav)]) == 0
        return capsys.readouterr().out.strip()

    greedy = run("--decoder", "greedy")
    with_lm = run("--decoder", "beam", "--lm", str(arpa))
    without_lm = run("--decoder", "beam", "--lm", "none")
    assert with_lm == sentence, (greedy, with_lm)
    # every word the LM decoder prints is a word of the LM, which greedy and LM-free beam do not promise
    assert set(with_lm.split()) <= {w for s in corpus for w in s.split()}
    assert without_lm != with_lm or greedy == sentence


def test_a_broken_lm_falls_back_to_greedy_under_auto_and_fails_an_explicit_beam(tiny_model, tmp_path, capsys):
    """The command line follows the daemon's policy (`streamer.beam.load_beam_search`): ``--decoder auto``
    with an unreadable model LM prints the greedy transcript and succeeds; ``--decoder beam`` says why and
    exits 2."""
    import shutil

    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    (model_dir / "lm.arpa.gz").write_bytes(b"not an ARPA file")
    wav = str(DATA / "hello_world.wav")

    def run(decoder: str) -> tuple[int, str, str]:
        code = cli.main(["transcribe", "--model", str(model_dir), "--decoder", decoder, "--json", wav])
        out, err = capsys.readouterr()
        return code, out, err

    code, greedy, _ = run("greedy")
    assert code == 0 and json.loads(greedy)["file"] == wav
    assert run("auto")[:2] == (0, greedy)
    code, out, err = run("beam")
    assert code == 2 and out == "" and "error:" in err


def test_python_api_decodes_as_the_command_line_does(capsys):
    """README's Python equivalent (`load_recognizer` + `transcribe_file`, defaults) prints what
    `conformer-streamer transcribe FILE` prints: the same decoder ("auto"), built once per recognizer."""
    from model import default_model_dir
    from streamer.beam import beam_search_installed

    if not (default_model_dir() / "model.safetensors").exists():
        pytest.skip("needs the embedded model")
    wav = str(DATA / "hello_world.wav")
    assert cli.main(["transcribe", wav]) == 0
    printed = capsys.readouterr().out.strip()
    recognizer = transcribe.load_recognizer()
    assert transcribe.transcribe_file(wav, recognizer).text == printed
    ships_lm = (default_model_dir() / "lm.arpa.gz").exists()
    search = recognizer.searches[("auto", transcribe.BEAM_WIDTH)]
    assert (search is not None) == (ships_lm and beam_search_installed())
    transcribe.transcribe_file(wav, recognizer)
    assert recognizer.searches[("auto", transcribe.BEAM_WIDTH)] is search  # reused, not rebuilt
    assert cli.main(["transcribe", "--decoder", "greedy", wav]) == 0
    assert (
        transcribe.transcribe_file(wav, recognizer, decoder="greedy").text == capsys.readouterr().out.strip()
    )
    with pytest.raises(ValueError, match="decoder must be one of"):
        transcribe.transcribe_file(wav, recognizer, decoder="beams")
