"""A small punctuation and true-casing model for the recognizer's finals.

Input: the words of a final (lower case, no marks). Output per word: its case (lower, Capitalized,
ALL CAPS) and the mark after it (none . , ? !). The words themselves cannot change: the output is
built by :func:`render`, which only flips the case of letters already there and appends a mark.

Architecture (why): a bidirectional GRU over word vectors. Casing and punctuation are local decisions
that need both sides of a word (the next word tells whether a sentence ended; the previous mark tells
whether a word starts one), which a BiGRU gives at a few hundred microseconds per 20 words, without
the memory and latency of a BERT-sized model. A word vector is the sum of

* an embedding of the word (the ``vocab_size`` most frequent training words, the rest share ``<unk>``);
* hashed character n-gram embeddings (prefixes and suffixes of 1-3 letters), so that unseen words
  still look like names, plurals or adverbs;
* a projection of lexicon features: how often the word is capitalized or all capitals in the middle
  of a training sentence, and whether ``wamerican`` lists it capitalized (a proper noun) or lower case.

Weights ship as float16 safetensors with ``config.json``, ``vocab.txt`` and ``lexicon.tsv.gz``.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

CASES = ("lower", "capitalized", "upper")
MARKS = ("", ".", ",", "?", "!")
N_LEX_FEATURES = 8
DEFAULT_DIR = Path(__file__).resolve().parent / "pretrained" / "punct-en"
_CONTRACTIONS_OF_I = {"i", "i'm", "i've", "i'll", "i'd"}


@dataclass
class PunctConfig:
    vocab_size: int = 8000
    dim: int = 64
    hidden: int = 96
    layers: int = 1
    char_buckets: int = 4096
    dropout: float = 0.1
    arch: str = "gru"  # "gru": bidirectional GRU; "cnn": dilated convolutions (layers = residual blocks)
    # added to the mark logits at decision time, chosen on the development set (punct_train.calibrate)
    mark_bias: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    # added to the case logits (lower, Capitalized, UPPER), chosen the same way (punct_train.calibrate_case)
    case_bias: tuple[float, ...] = (0.0, 0.0, 0.0)
    # added to the ``.``, ``?``, ``!`` logits of a complete utterance's last word (:func:`end_mark`), chosen
    # on the development sets of whole finals (bench/data/punct_dev_*.txt)
    end_bias: tuple[float, ...] = (0.0, 0.0, 0.0)

    @classmethod
    def from_dict(cls, d: dict) -> PunctConfig:
        values = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("mark_bias", "case_bias", "end_bias"):
            if key in values:
                values[key] = tuple(float(x) for x in values[key])
        return cls(**values)


# --------------------------------------------------------------------------------------- rendering


def apply_case(word: str, case: int) -> str:
    """``word`` with its letters' case set; never adds, drops or reorders a character."""
    if case == 2 and sum(c.isalpha() for c in word) > 1:
        return word.upper()
    if case >= 1:
        for i, c in enumerate(word):
            if c.isalpha():
                return word[:i] + c.upper() + word[i + 1 :].lower()
    return word.lower()


def render(words: Sequence[str], cases: Sequence[int], marks: Sequence[int]) -> list[str]:
    """One display token per input word: the word recased, then its mark."""
    return [apply_case(w, c) + MARKS[m] for w, c, m in zip(words, cases, marks, strict=True)]


def strip_format(token: str) -> str:
    """The recognizer's word back from a display token (lower case, trailing mark removed)."""
    return token.rstrip(".,?!").lower()


# ---------------------------------------------------------------------------------------- features


class Lexicon:
    """Per-word case statistics from the training text plus the ``wamerican`` word list."""

    def __init__(self, rows: dict[str, tuple[int, int, int, int]]) -> None:
        # word -> (lower mid-sentence, Capitalized mid-sentence, ALL CAPS mid-sentence, dict flags)
        # dict flags: bit 0 listed lower case, bit 1 listed capitalized
        self.rows = rows

    def features(self, word: str) -> list[float]:
        lo, cap, up, flags = self.rows.get(word, (0, 0, 0, 0))
        n = lo + cap + up
        return [
            math.log1p(n) / 8.0,
            (cap + 0.05) / (n + 0.5),
            (up + 0.02) / (n + 0.5),
            float(flags & 1),
            float((flags >> 1) & 1),
            min(len(word), 15) / 10.0,
            float("'" in word),
            float(len(word) == 1),
        ]

    def save(self, path: Path) -> None:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            for word in sorted(self.rows):
                f.write(word + "\t" + "\t".join(map(str, self.rows[word])) + "\n")

    @classmethod
    def load(cls, path: Path) -> Lexicon:
        rows = {}
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                word, *nums = line.rstrip("\n").split("\t")
                rows[word] = tuple(int(x) for x in nums)
        return cls(rows)  # type: ignore[arg-type]


def char_ngrams(word: str, buckets: int) -> list[int]:
    """Hashed ids of the word's 1-3 letter prefixes and suffixes (stable across runs: crc32)."""
    grams = [f"<{word[:k]}" for k in (1, 2, 3)] + [f"{word[-k:]}>" for k in (1, 2, 3)]
    return [1 + zlib.crc32(g.encode()) % (buckets - 1) for g in grams]


N_GRAMS = 6


class Featurizer:
    def __init__(self, vocab: Sequence[str], lexicon: Lexicon, config: PunctConfig) -> None:
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}  # 0 <pad>, 1 <unk>
        self.lexicon = lexicon
        self.config = config
        self._cache: dict[str, tuple[int, list[int], list[float]]] = {}

    def word(self, w: str) -> tuple[int, list[int], list[float]]:
        hit = self._cache.get(w)
        if hit is None:
            hit = (self.index.get(w, 1), char_ngrams(w, self.config.char_buckets), self.lexicon.features(w))
            if len(self._cache) < 200_000:
                self._cache[w] = hit
        return hit

    def batch(self, sentences: Sequence[Sequence[str]]) -> tuple[torch.Tensor, ...]:
        """ids (B, T), grams (B, T, 6), lex (B, T, 8), lengths (B,); padded with zeros."""
        b, t = len(sentences), max(len(s) for s in sentences)
        ids = np.zeros((b, t), dtype=np.int64)
        grams = np.zeros((b, t, N_GRAMS), dtype=np.int64)
        lex = np.zeros((b, t, N_LEX_FEATURES), dtype=np.float32)
        for i, sentence in enumerate(sentences):
            for j, w in enumerate(sentence):
                ids[i, j], grams[i, j], lex[i, j] = self.word(w)
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.int64)
        return torch.from_numpy(ids), torch.from_numpy(grams), torch.from_numpy(lex), lengths


# ------------------------------------------------------------------------------------------- model


class PunctModel(nn.Module):
    def __init__(self, config: PunctConfig) -> None:
        super().__init__()
        self.config = config
        self.words = nn.Embedding(config.vocab_size, config.dim, padding_idx=0)
        self.grams = nn.EmbeddingBag(config.char_buckets, config.dim, mode="sum", padding_idx=0)
        self.lex = nn.Linear(N_LEX_FEATURES, config.dim)
        self.drop = nn.Dropout(config.dropout)
        if config.arch == "cnn":
            # a 3-word stem, then residual blocks of dilation 1, 2, 4, ...: each word sees +-(1 + 2^L - 1) words
            self.stem = nn.Conv1d(config.dim, config.hidden, 3, padding=1)
            self.blocks = nn.ModuleList(
                nn.Conv1d(config.hidden, config.hidden, 3, padding=2**i, dilation=2**i)
                for i in range(config.layers)
            )
            out = config.hidden
        else:
            self.rnn = nn.GRU(
                config.dim,
                config.hidden,
                num_layers=config.layers,
                batch_first=True,
                bidirectional=True,
                dropout=config.dropout if config.layers > 1 else 0.0,
            )
            out = 2 * config.hidden
        self.case_head = nn.Linear(out, len(CASES))
        self.mark_head = nn.Linear(out, len(MARKS))

    def forward(
        self, ids: torch.Tensor, grams: torch.Tensor, lex: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = ids.shape
        g = self.grams(grams.reshape(b * t, N_GRAMS)).reshape(b, t, -1)  # (B*T, 6) -> (B, T, D)
        x = torch.tanh(self.words(ids) + g + self.lex(lex))
        x = self.drop(x)
        # padding (training batches are of nearly equal length) is zeroed rather than packed: faster on CPU
        mask = (torch.arange(t)[None, :] < lengths[:, None]).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        x = x * mask
        if self.config.arch == "cnn":
            m = mask.transpose(1, 2)  # (B, 1, T)
            h = torch.relu(self.stem(x.transpose(1, 2))) * m  # (B, D, T) -> (B, C, T)
            for block in self.blocks:
                h = h + torch.relu(block(self.drop(h))) * m
            h = h.transpose(1, 2)  # (B, T, C)
        else:
            h, _ = self.rnn(x)
        h = self.drop(h)  # (B, T, 2H)
        return self.case_head(h), self.mark_head(h)


def size_bytes(model: nn.Module) -> int:
    return sum(p.numel() * 2 for p in model.parameters())  # float16 on disk


def save(model: PunctModel, vocab: Sequence[str], lexicon: Lexicon, out: Path, extra: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors"
    )
    (out / "config.json").write_text(json.dumps({**asdict(model.config), **extra}, indent=2) + "\n")
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    lexicon.save(out / "lexicon.tsv.gz")


# --------------------------------------------------------------------------------------- inference


class NumpyPunctModel:
    """:class:`PunctModel`'s forward pass in numpy, for serving.

    A final is 1 x ~20 words: the cost is per-operation overhead, not arithmetic, and numpy's is
    lower and steadier than torch's. It also keeps the daemon's formatting off torch's intra-op
    thread pool, which the recognizer owns (on a busy machine a second user of that pool spins).
    """

    def __init__(self, state: dict[str, np.ndarray], config: PunctConfig) -> None:
        f32 = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
        self.config = config
        self.words, self.grams = f32["words.weight"], f32["grams.weight"]
        self.lex_w, self.lex_b = f32["lex.weight"].T.copy(), f32["lex.bias"]
        self.layers = []
        # convolutions as (kernel tap, C_in, C_out) stacks, with their bias and dilation
        self.convs = []
        if config.arch == "cnn":
            names = ["stem"] + [f"blocks.{i}" for i in range(config.layers)]
            for i, name in enumerate(names):
                w = f32[f"{name}.weight"].transpose(2, 1, 0).copy()  # (C_out, C_in, k) -> (k, C_in, C_out)
                self.convs.append((w, f32[f"{name}.bias"], 1 if i == 0 else 2 ** (i - 1)))
        for layer in range(config.layers if config.arch == "gru" else 0):
            dirs = []
            for suffix in ("", "_reverse"):
                name = f"l{layer}{suffix}"
                dirs.append(
                    (
                        f32[f"rnn.weight_ih_{name}"].T.copy(),  # (D_in, 3H)
                        f32[f"rnn.bias_ih_{name}"],
                        f32[f"rnn.weight_hh_{name}"].T.copy(),  # (H, 3H)
                        f32[f"rnn.bias_hh_{name}"],
                    )
                )
            self.layers.append(dirs)
        self.case_w = f32["case_head.weight"].T.copy()
        self.case_b = f32["case_head.bias"] + np.asarray(config.case_bias, dtype=np.float32)
        self.mark_w = f32["mark_head.weight"].T.copy()
        self.mark_b = f32["mark_head.bias"] + np.asarray(config.mark_bias, dtype=np.float32)

    def __call__(self, ids: np.ndarray, grams: np.ndarray, lex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One utterance: ids (T,), grams (T, 6), lex (T, 8) -> case logits (T, 3), mark logits (T, 5)."""
        grams_sum = self.grams[grams].sum(axis=1)  # (T, 6, D) -> (T, D); bucket 0 is the zero padding row
        x = np.tanh(self.words[ids] + grams_sum + _mm(lex, self.lex_w) + self.lex_b)
        if self.convs:
            w, b, d = self.convs[0]
            x = np.maximum(_conv(x, w, b, d), 0.0)
            for w, b, d in self.convs[1:]:
                x = x + np.maximum(_conv(x, w, b, d), 0.0)
        for forward, backward in self.layers:
            x = np.concatenate([_gru(x, *forward, reverse=False), _gru(x, *backward, reverse=True)], axis=1)
        return _mm(x, self.case_w) + self.case_b, _mm(x, self.mark_w) + self.mark_b


def _openblas_single_thread_macs() -> int:
    """The largest matrix product (m * n * k) numpy's BLAS runs on the calling thread alone, 0 if unknown.

    OpenBLAS (numpy's wheels) runs a gemm single-threaded up to SMP_THRESHOLD_MIN (65536) x
    GEMM_MULTITHREAD_THRESHOLD (4, its default) multiply-adds (interface/gemm.c); measured here: a
    28 x 96 x 96 product takes 30 us on one thread, 29 x 96 x 96 wakes the second thread (169 us wall, busy
    host). Any other BLAS: 0, and `_mm` keeps to einsum.
    """
    try:
        name = np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]  # type: ignore[attr-defined]
    except (AttributeError, KeyError, TypeError):
        return 0
    return 65536 * 4 if str(name).startswith(("openblas", "scipy-openblas")) else 0


_SINGLE_THREAD_MACS = _openblas_single_thread_macs()


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, never on BLAS's threads: at these sizes (at most ~100 x 256 x 768) they cost more than they
    save, and on a busy machine they spin against the recognizer's (docs/RESULTS.md, "Small costs").

    A 2-D ``a`` goes to BLAS in row blocks small enough for OpenBLAS to stay on the calling thread (about
    twice einsum's speed: a 20-word final costs 0.75 ms of CPU instead of 1.2 ms); vectors (the GRU's
    recurrence: gemv has its own, lower threshold) and other BLAS libraries use einsum.
    """
    rows = _SINGLE_THREAD_MACS // (b.shape[0] * b.shape[1])
    if a.ndim != 2 or rows < 4:
        return np.einsum("...i,ij->...j", a, b)
    if a.shape[0] <= rows:
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for start in range(0, a.shape[0], rows):
        np.matmul(a[start : start + rows], b, out=out[start : start + rows])
    return out


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, dilation: int) -> np.ndarray:
    """torch.nn.Conv1d with 'same' zero padding: x (T, C_in), w (k, C_in, C_out) -> (T, C_out)."""
    k, t = w.shape[0], x.shape[0]
    pad = dilation * (k - 1) // 2
    xp = np.zeros((t + 2 * pad, x.shape[1]), dtype=x.dtype)
    xp[pad : pad + t] = x
    out = b + _mm(xp[0:t], w[0])
    for j in range(1, k):
        out += _mm(xp[j * dilation : j * dilation + t], w[j])
    return out


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * v) + 1.0)


def _gru(
    x: np.ndarray, w_ih: np.ndarray, b_ih: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray, reverse: bool
) -> np.ndarray:
    """torch.nn.GRU's recurrence (gates r, z, n) over x (T, D_in) -> (T, H)."""
    t_len, hidden = x.shape[0], w_hh.shape[0]
    gates_x = _mm(x, w_ih) + b_ih  # (T, 3H)
    h = np.zeros(hidden, dtype=np.float32)
    out = np.empty((t_len, hidden), dtype=np.float32)
    for t in range(t_len - 1, -1, -1) if reverse else range(t_len):
        gx, gh = gates_x[t], _mm(h, w_hh) + b_hh
        rz = _sigmoid(gx[: 2 * hidden] + gh[: 2 * hidden])
        n = np.tanh(gx[2 * hidden :] + rz[:hidden] * gh[2 * hidden :])
        z = rz[hidden:]
        h = (1.0 - z) * n + z * h
        out[t] = h
    return out


class Punctuator:
    """Formats finals: ``format_words(["hello", "world"]) -> ["Hello", "world."]``.

    Safe to call from several threads at once (read-only weights). Inputs longer than ``chunk``
    words are formatted in overlapping chunks, so the cost stays linear in the length.
    """

    def __init__(
        self, model: NumpyPunctModel, featurizer: Featurizer, chunk: int = 120, overlap: int = 16
    ) -> None:
        self.model = model
        self.featurizer = featurizer
        self.chunk = chunk
        self.overlap = overlap

    @classmethod
    def load(cls, path: Path = DEFAULT_DIR) -> Punctuator:
        from safetensors.numpy import load_file

        path = Path(path)
        if not (path / "model.safetensors").exists():
            raise FileNotFoundError(f"no punctuation model in {path} (model.safetensors missing)")
        config = PunctConfig.from_dict(json.loads((path / "config.json").read_text()))
        model = NumpyPunctModel(load_file(str(path / "model.safetensors")), config)
        vocab = (path / "vocab.txt").read_text().split("\n")[: config.vocab_size]
        featurizer = Featurizer(vocab, Lexicon.load(path / "lexicon.tsv.gz"), config)
        return cls(model, featurizer)

    def _logits(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        feats = [self.featurizer.word(w.lower()) for w in words]
        ids = np.array([f[0] for f in feats], dtype=np.int64)
        grams = np.array([f[1] for f in feats], dtype=np.int64)
        lex = np.array([f[2] for f in feats], dtype=np.float32)
        return self.model(ids, grams, lex)

    def predict(self, words: Sequence[str], complete: bool = True) -> tuple[list[int], list[int]]:
        """Case and mark class per word. ``complete``: the words are a whole utterance (a final that the
        endpointer closed, a line of text), so the last one ends a sentence (see :func:`end_mark`)."""
        n = len(words)
        if n == 0:
            return [], []
        cases = [0] * n
        marks = [0] * n
        step = self.chunk - 2 * self.overlap
        start = 0
        while True:
            a = max(0, start - self.overlap)
            b = min(n, start + step + self.overlap) if n > self.chunk else n
            case_logits, mark_logits = self._logits(words[a:b])
            c, m = case_logits.argmax(-1).tolist(), mark_logits.argmax(-1).tolist()
            keep_to = b if b == n else min(b, start + step)
            for k in range(start, keep_to):
                cases[k], marks[k] = c[k - a], m[k - a]
            if keep_to >= n:
                if complete:
                    marks[n - 1] = end_mark(mark_logits[-1], self.model.config.end_bias)
                break
            start = keep_to
        return consistent(list(words), cases, marks, self.featurizer.lexicon)

    def format_words(self, words: Sequence[str], complete: bool = True) -> list[str]:
        cases, marks = self.predict(words, complete)
        return render(words, cases, marks)

    def format_text(self, text: str, complete: bool = True) -> str:
        return " ".join(self.format_words(text.split(), complete))


SENTENCE_ENDS = [MARKS.index(m) for m in ".?!"]


def end_mark(mark_logits: np.ndarray, end_bias: Sequence[float] = (0.0, 0.0, 0.0)) -> int:
    """The mark after the last word of a complete utterance: the likeliest of ``.``, ``?``, ``!``.

    Why a rule: a final is what the speaker said before a pause, and readers expect it to end like a
    sentence (every reference set here does: written, development, eval/real). The model, trained on
    text cut into stretches that sometimes stop mid-sentence, left 10% of short development finals
    ("Stop", "Thank you") without a mark. Which mark stays the model's choice, shifted by ``end_bias``.
    """
    scores = np.asarray(mark_logits)[SENTENCE_ENDS] + np.asarray(end_bias)
    return SENTENCE_ENDS[int(np.argmax(scores))]


def consistent(
    words: list[str], cases: list[int], marks: list[int], lexicon: Lexicon | None = None
) -> tuple[list[int], list[int]]:
    """Orthography the model should not have to guess: a sentence starts with a capital, "I" (with its
    contractions) is always capitalized, and, given the ``lexicon``, so are proper nouns
    (:func:`proper_nouns_capitalized`)."""
    if not words:
        return cases, marks
    is_i = np.array([w.lower() in _CONTRACTIONS_OF_I for w in words])
    first = np.arange(len(words)) == 0
    cases = capital_rule(np.asarray(cases), np.asarray(marks), is_i, first).tolist()
    if lexicon is not None:
        cases = proper_nouns_capitalized(words, cases, lexicon)
    return cases, marks


def proper_nouns_capitalized(words: list[str], cases: list[int], lexicon: Lexicon) -> list[int]:
    """A word that ``wamerican`` lists only capitalized and that the training text never wrote in lower
    case is a proper noun: it is at least Capitalized ("Thank you, Gerald."). The model reads the same flags
    but, weighing them against its context, still wrote such names in lower case after commas; on the
    development sets the rule fixed 1 / 4 / 21 words and broke 0 / 2 / 1 (written, book, talk-like sets)."""
    out = list(cases)
    for i, w in enumerate(words):
        lower, _, _, flags = lexicon.rows.get(w.lower(), (0, 0, 0, 0))
        if out[i] == 0 and flags == 2 and lower == 0:
            out[i] = 1
    return out


def capital_rule(cases: np.ndarray, marks: np.ndarray, is_i: np.ndarray, first: np.ndarray) -> np.ndarray:
    """``consistent``'s rule on arrays: the cases of one final, or of many laid end to end with ``first``
    true where each begins (``punct_train.calibrate_case`` scores case offsets after the same rule)."""
    starts = first.copy()
    starts[1:] |= np.isin(marks[:-1], SENTENCE_ENDS)
    out = cases.copy()
    out[is_i | (starts & (cases == 0))] = 1
    return out
