"""Train the punctuation and casing model (``model.punctuation``) on CPU from the training sources."""

from __future__ import annotations

import logging
import math
import pickle
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.punctuation import (
    _CONTRACTIONS_OF_I,
    CASES,
    MARKS,
    N_GRAMS,
    N_LEX_FEATURES,
    SENTENCE_ENDS,
    Featurizer,
    Lexicon,
    PunctConfig,
    PunctModel,
    capital_rule,
    consistent,
    save,
    size_bytes,
)
from model.training import punct_data
from model.training.punct_eval import Scores
from model.training.text import WORDLIST

log = logging.getLogger("streamer.punct")

SIZES = {
    "small": PunctConfig(vocab_size=8000, dim=64, hidden=64, layers=1, char_buckets=4096),
    "large": PunctConfig(vocab_size=16000, dim=96, hidden=128, layers=1, char_buckets=8192),
    "cnn-small": PunctConfig(vocab_size=8000, dim=64, hidden=96, layers=4, char_buckets=4096, arch="cnn"),
    "cnn-large": PunctConfig(vocab_size=16000, dim=96, hidden=160, layers=4, char_buckets=8192, arch="cnn"),
    # dilations 1..16: each word sees 32 words either side, a whole 1-3 sentence final
    "cnn-wide": PunctConfig(vocab_size=16000, dim=96, hidden=192, layers=5, char_buckets=8192, arch="cnn"),
}
MARK_WEIGHTS = [1.0, 2.0, 1.0, 4.0, 2.0]  # none . , ? !
# utterances with a question are repeated: questions are 0.4% of the training words but common in speech
QUESTION_REPEATS = 3
# mark offsets tried; the ? offset stopped at -2.0, the old lower edge (session 13), hence down to -5
CALIBRATION_GRID = tuple(k / 2 for k in range(-10, 11))  # -5 .. 5 in steps of 0.5
CASE_CALIBRATION_GRID = tuple(k / 4 for k in range(-8, 9))  # -2 .. 2 in steps of 0.25


def load_examples(cache: Path | None, short_stretches: int = 0) -> list[punct_data.Example]:
    """The training utterances (the first ``DEV_SIZE`` are the development cut): read from ``cache`` if it
    exists, whatever ``short_stretches`` it was built with; else built with ``short_stretches`` and written
    there."""
    if cache is not None and cache.exists():
        with cache.open("rb") as f:
            return pickle.load(f)
    t0 = time.monotonic()
    examples = punct_data.training_examples(short_stretches=short_stretches)
    log.info("%d training utterances in %.0f s", len(examples), time.monotonic() - t0)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("wb") as f:
            pickle.dump(examples, f)
    return examples


def repeat_questions(examples: list[punct_data.Example], repeats: int) -> list[punct_data.Example]:
    question = MARKS.index("?")
    return examples + [e for e in examples if question in e.marks] * (repeats - 1)


def build_lexicon(examples: list[punct_data.Example], wordlist: Path = WORDLIST) -> Lexicon:
    """Mid-sentence case counts (a word that does not start a sentence keeps its own case) + wamerican."""
    counts: dict[str, list[int]] = {}
    for ex in examples:
        for i, (w, c) in enumerate(zip(ex.words, ex.cases, strict=True)):
            if i == 0 or ex.marks[i - 1] in SENTENCE_ENDS or w == "i":
                continue
            counts.setdefault(w, [0, 0, 0, 0])[c] += 1
    if wordlist.exists():
        for entry in wordlist.read_text(errors="replace").split():
            if entry.endswith("'s"):
                continue
            w = entry.lower()
            if not w.isascii():
                continue
            counts.setdefault(w, [0, 0, 0, 0])[3] |= 2 if entry[0].isupper() else 1
    return Lexicon({w: tuple(v) for w, v in counts.items()})  # type: ignore[misc]


# Share of the word types outside the embedding vocabulary whose training-text counts the model is not
# shown in training (only the word list's flags): every word it meets later that the training text never
# held has no counts either, and without such words in training it never learnt to read the flags alone
# (an unseen "Gwendolyn" or "Albuquerque", listed capitalized, stayed lower case).
UNSEEN_SHARE = 0.3


def as_unseen(lexicon: Lexicon, vocab: Sequence[str], share: float, seed: int) -> Lexicon:
    """The lexicon with the counts of a random ``share`` of the out-of-vocabulary words removed (their
    word-list flags kept), for featurizing the training text only; the saved model keeps all counts."""
    rng = random.Random(seed)
    known = set(vocab)
    rows = {
        w: (0, 0, 0, row[3]) if w not in known and rng.random() < share else row
        for w, row in sorted(lexicon.rows.items())
    }
    return Lexicon(rows)


def build_vocab(examples: list[punct_data.Example], size: int) -> list[str]:
    freq = Counter(w for ex in examples for w in ex.words)
    return ["<pad>", "<unk>"] + [w for w, _ in freq.most_common(size - 2)]


class Encoded:
    """The utterances featurized once: a table of distinct words and, per utterance, indices into it."""

    def __init__(self, examples: list[punct_data.Example], featurizer: Featurizer) -> None:
        table: dict[str, int] = {"": 0}
        self.rows = [
            np.array([table.setdefault(w, len(table)) for w in e.words], dtype=np.int64) for e in examples
        ]
        words = list(table)
        feats = [featurizer.word(w) for w in words[1:]]
        self.ids = torch.tensor([0] + [f[0] for f in feats])  # (U,)
        self.grams = torch.tensor([[0] * N_GRAMS] + [f[1] for f in feats])  # (U, 6)
        self.lex = torch.tensor([[0.0] * N_LEX_FEATURES] + [f[2] for f in feats])  # (U, 8)
        self.cases = [np.array(e.cases, dtype=np.int64) for e in examples]
        self.marks = [np.array(e.marks, dtype=np.int64) for e in examples]

    def batch(self, group: list[int]) -> tuple[torch.Tensor, ...]:
        """Model inputs (B, T, ...) and targets (B, T) of the utterances ``group`` (-100 = padding)."""
        t = max(len(self.rows[i]) for i in group)
        index = np.zeros((len(group), t), dtype=np.int64)
        cases = np.full((len(group), t), -100, dtype=np.int64)
        marks = np.full((len(group), t), -100, dtype=np.int64)
        for k, i in enumerate(group):
            n = len(self.rows[i])
            index[k, :n], cases[k, :n], marks[k, :n] = self.rows[i], self.cases[i], self.marks[i]
        idx = torch.from_numpy(index)
        lengths = torch.tensor([len(self.rows[i]) for i in group])
        inputs = (self.ids[idx], self.grams[idx], self.lex[idx], lengths)
        return inputs, torch.from_numpy(cases), torch.from_numpy(marks)


def _batches(lengths: list[int], batch_words: int, rng: random.Random) -> list[list[int]]:
    """Batches of utterances of (nearly) equal length, about ``batch_words`` words each, shuffled."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches, current, longest = [], [], 0
    for i in order:
        longest = max(longest, lengths[i])
        if current and longest * (len(current) + 1) > batch_words:
            batches.append(current)
            current, longest = [], lengths[i]
        current.append(i)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


@torch.inference_mode()
def predict_all(model: PunctModel, data: Encoded) -> list[tuple[list[int], list[int]]]:
    """Case and mark classes of every utterance, batched (the same decisions as ``Punctuator.predict`` with
    ``complete=False``: the development cuts of training text may stop mid-sentence)."""
    model.eval()
    out: list[tuple[list[int], list[int]]] = [([], [])] * len(data.rows)
    for group in _batches([len(r) for r in data.rows], 4096, random.Random(0)):
        inputs, _, _ = data.batch(group)
        case_logits, mark_logits = model(*inputs)
        mark_logits = mark_logits + torch.tensor(model.config.mark_bias)
        case_logits = case_logits + torch.tensor(model.config.case_bias)
        cases, marks = case_logits.argmax(-1).tolist(), mark_logits.argmax(-1).tolist()
        for k, i in enumerate(group):
            n = len(data.rows[i])
            out[i] = consistent(["?"] * n, cases[k][:n], marks[k][:n])
    return out


def dev_scores(model: PunctModel, data: Encoded, examples: list[punct_data.Example]) -> dict[str, float]:
    s = Scores()
    for ex, (cases, marks) in zip(examples, predict_all(model, data), strict=True):
        s.add(ex.words, ex.cases, ex.marks, cases, marks)
    return s.summary()


def train(
    size: str,
    out: Path,
    minutes: float = 20.0,
    cache: Path | None = None,
    seed: int = 1,
    batch_words: int = 6144,
    lr: float = 4e-3,
    init: Path | None = None,
    short_stretches: int = 0,
) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    config = SIZES[size]
    examples = load_examples(cache, short_stretches)
    dev, train_set = examples[: punct_data.DEV_SIZE], examples[punct_data.DEV_SIZE :]
    if init is not None:  # the embedding rows belong to the saved model's words
        vocab = (init / "vocab.txt").read_text().split("\n")[: config.vocab_size]
    else:
        vocab = build_vocab(train_set, config.vocab_size)
    lexicon = build_lexicon(train_set)
    featurizer = Featurizer(vocab, lexicon, config)
    train_featurizer = Featurizer(vocab, as_unseen(lexicon, vocab, UNSEEN_SHARE, seed), config)
    train_set = repeat_questions(train_set, QUESTION_REPEATS)
    data, dev_data = Encoded(train_set, train_featurizer), Encoded(dev, featurizer)
    talk = punct_data.talk_dev_examples(dev)
    talk_data = Encoded(talk, featurizer)
    dev_sets = [(dev_data, dev), (talk_data, talk)]
    model = PunctModel(config)
    if init is not None:  # continue from a saved model (same size and vocabulary)
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(str(init / "model.safetensors")).items()})
    log.info(
        "%s: %d parameters (%.2f MB float16), %d training utterances, %d words",
        size,
        sum(p.numel() for p in model.parameters()),
        size_bytes(model) / 1e6,
        len(train_set),
        sum(len(e.words) for e in train_set),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    case_loss = nn.CrossEntropyLoss(ignore_index=-100)
    # the rarer sentence marks count more, so that they are learnt within a CPU budget of minutes
    mark_loss = nn.CrossEntropyLoss(ignore_index=-100, weight=torch.tensor(MARK_WEIGHTS))
    t0 = time.monotonic()
    budget = 60 * minutes
    step, epoch, best, best_state = 0, 0, -1.0, None
    lengths = [len(r) for r in data.rows]
    while time.monotonic() - t0 < budget:
        epoch += 1
        for group in _batches(lengths, batch_words, rng):
            elapsed = time.monotonic() - t0
            if elapsed >= budget:
                break
            model.train()
            inputs, case_t, mark_t = data.batch(group)
            case_logits, mark_logits = model(*inputs)
            loss = case_loss(case_logits.flatten(0, 1), case_t.flatten()) + mark_loss(
                mark_logits.flatten(0, 1), mark_t.flatten()
            )
            for g in optimizer.param_groups:  # cosine decay over the time budget
                g["lr"] = lr * (0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            if step % 50 == 0:
                log.info("epoch %d step %d loss %.4f (%.0f s)", epoch, step, loss.item(), elapsed)
            if step % 150 == 0:
                best, best_state = _checkpoint(model, dev_sets, best, best_state, step)
    best, best_state = _checkpoint(model, dev_sets, best, best_state, step)
    model.load_state_dict(best_state)
    model.eval()
    logits = _dev_logits(model, talk_data)  # offsets move no logit: computed once for both
    model.config.mark_bias = calibrate(model, talk_data, talk, logits)
    model.config.case_bias = calibrate_case(model, talk_data, talk, logits)
    model.config.end_bias = calibrate_end(model, featurizer, dev + talk)
    extra = {
        "size": size,
        "trained_steps": step,
        "epochs": epoch,
        "train_minutes": round((time.monotonic() - t0) / 60, 1),
        "continued_from": str(init) if init else None,
        "short_stretches": short_stretches,
        "train_utterances": len(train_set),
        "dev": {k: round(v, 4) for k, v in dev_scores(model, dev_data, dev).items()},
        "talk_dev": {k: round(v, 4) for k, v in dev_scores(model, talk_data, talk).items()},
    }
    save(model, vocab, lexicon, out, extra)
    log.info("saved %s: dev %s", out, extra["dev"])
    return extra


@torch.inference_mode()
def _dev_logits(model: PunctModel, data: Encoded) -> tuple[np.ndarray, np.ndarray]:
    """Case (N, 3) and mark (N, 5) logits of every word of ``data``, without any offset."""
    model.eval()
    cases: list[np.ndarray] = [np.zeros(0)] * len(data.rows)
    marks: list[np.ndarray] = [np.zeros(0)] * len(data.rows)
    for group in _batches([len(r) for r in data.rows], 4096, random.Random(0)):
        inputs, _, _ = data.batch(group)
        case_logits, mark_logits = model(*inputs)
        for k, i in enumerate(group):
            cases[i] = case_logits[k, : len(data.rows[i])].numpy()
            marks[i] = mark_logits[k, : len(data.rows[i])].numpy()
    return np.concatenate(cases), np.concatenate(marks)


def search_offsets(
    n_classes: int, objective: Callable[[np.ndarray], float], grid: Sequence[float]
) -> tuple[np.ndarray, float]:
    """Per-class logit offsets (class 0 fixed at 0) that maximize ``objective``: two rounds of
    coordinate ascent over ``grid``; an offset moves only if the objective strictly improves."""
    bias = np.zeros(n_classes, dtype=np.float32)
    best = objective(bias)
    for _ in range(2):
        for m in range(1, n_classes):
            for value in grid:
                trial = bias.copy()
                trial[m] = value
                score_ = objective(trial)
                if score_ > best:
                    best, bias = score_, trial
    return bias, best


def mark_objective(flat: np.ndarray, ref: np.ndarray) -> Callable[[np.ndarray], float]:
    """F1 of . , ? plus a little of ! for offsets added to the mark logits ``flat`` (N, 5)."""

    def objective(bias: np.ndarray) -> float:
        hyp = (flat + bias).argmax(-1)
        f1 = []
        for m in range(1, len(MARKS)):
            tp = int(((hyp == m) & (ref == m)).sum())
            wrong = int(((hyp == m) != (ref == m)).sum())
            f1.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
        return f1[0] + f1[1] + f1[2] + 0.2 * f1[3]

    return objective


def case_objective(
    flat: np.ndarray, ref: np.ndarray, marks: np.ndarray, is_i: np.ndarray, first: np.ndarray
) -> Callable[[np.ndarray], float]:
    """Case accuracy for offsets added to the case logits ``flat`` (N, 3), after ``consistent``'s rule
    (``model.punctuation.capital_rule``) with the words' ``marks`` as served."""

    def objective(bias: np.ndarray) -> float:
        return float((capital_rule((flat + bias).argmax(-1), marks, is_i, first) == ref).mean())

    return objective


Logits = tuple[np.ndarray, np.ndarray]


def calibrate(
    model: PunctModel, data: Encoded, examples: list[punct_data.Example], logits: Logits | None = None
) -> tuple[float, ...]:
    """Per-mark logit offsets that maximize the F1 of . , ? (and a little of !) on a development set
    (``train`` and ``calibrate_saved`` pass the talk-like one, ``punct_data.talk_dev_examples``).

    Cross-entropy training leaves rare marks under-predicted; shifting their logits is the usual
    threshold choice, made on held-back text (never on the evaluation sets). Offsets may be negative:
    a model that splits short spoken commands needs a higher bar for a period inside a final, and the
    question mark, weighted and repeated in training, is over-predicted on talk. ``logits``: the
    model's on ``data`` (``_dev_logits``), when the caller has them already.
    """
    _, flat = logits if logits is not None else _dev_logits(model, data)
    ref = np.concatenate([np.array(e.marks) for e in examples])
    bias, best = search_offsets(len(MARKS), mark_objective(flat, ref), CALIBRATION_GRID)
    if min(bias) <= CALIBRATION_GRID[0] or max(bias) >= CALIBRATION_GRID[-1]:
        log.warning("a mark offset is at the edge of the calibration grid: %s", bias.round(2).tolist())
    log.info("calibrated mark offsets %s (dev objective %.4f)", bias.round(2).tolist(), best)
    return tuple(float(x) for x in bias)


def calibrate_case(
    model: PunctModel, data: Encoded, examples: list[punct_data.Example], logits: Logits | None = None
) -> tuple[float, ...]:
    """Case logit offsets (lower fixed at 0) that maximize case accuracy on the same development set.

    The same threshold choice as the marks': the training text (books, title-heavy lists) has more
    capitals than talk; the offset moves only if accuracy strictly improves, so a model that already
    fits the set keeps 0. Scored after the sentence-start rule (``consistent``) with the calibrated
    mark offsets, as served: call it after ``calibrate``.
    """
    flat, mark_logits = logits if logits is not None else _dev_logits(model, data)
    ref = np.concatenate([np.array(e.cases) for e in examples])
    marks = (mark_logits + np.asarray(model.config.mark_bias, dtype=np.float32)).argmax(-1)
    first = np.concatenate([np.arange(len(e.words)) == 0 for e in examples])
    is_i = np.concatenate([[w.lower() in _CONTRACTIONS_OF_I for w in e.words] for e in examples])
    objective = case_objective(flat, ref, marks, is_i, first)
    bias, best = search_offsets(len(CASES), objective, CASE_CALIBRATION_GRID)
    log.info("calibrated case offsets %s (dev accuracy %.4f)", bias.round(2).tolist(), best)
    return tuple(float(x) for x in bias)


def calibrate_end(
    model: PunctModel, featurizer: Featurizer, cuts: Sequence[punct_data.Example] = ()
) -> tuple[float, ...]:
    """Offsets for the ``.``, ``?``, ``!`` logits of a whole final's last word (``end_mark``; ``.`` fixed
    at 0), chosen to get the most end marks right after the mark offsets (call it after ``calibrate``).

    Chosen on whole finals only: the written development sets (``punct_data.whole_final_dev_examples``,
    one question in five) and those development ``cuts`` of training text that end a sentence (where
    questions are as rare as in books and talk). Why separate offsets: the interior offsets weigh a mark
    against no mark on text cut anywhere; at the end of a final the choice is only which mark.
    """
    finals = punct_data.whole_final_dev_examples() + [e for e in cuts if e.marks[-1] in SENTENCE_ENDS]
    if not finals:
        return (0.0,) * len(SENTENCE_ENDS)
    _, marks = _dev_logits(model, Encoded(finals, featurizer))
    last = np.cumsum([len(e.words) for e in finals]) - 1
    flat = (marks[last] + np.asarray(model.config.mark_bias, dtype=np.float32))[:, SENTENCE_ENDS]  # (N, 3)
    ref = np.array([e.marks[-1] for e in finals])

    def objective(bias: np.ndarray) -> float:
        return float((np.asarray(SENTENCE_ENDS)[(flat + bias).argmax(-1)] == ref).mean())

    bias, best = search_offsets(len(SENTENCE_ENDS), objective, CALIBRATION_GRID)
    log.info("calibrated end-mark offsets %s (dev end marks right %.4f)", bias.round(2).tolist(), best)
    return tuple(float(x) for x in bias)


def calibrate_saved(model_dir: Path, cache: Path | None, end_only: bool = False) -> dict:
    """Calibrate a saved model in place (its config.json gets ``mark_bias``, ``case_bias``, ``end_bias``
    and fresh dev figures; with ``end_only``, ``end_bias`` alone, after the model's own mark offsets)."""
    import json

    from safetensors.torch import load_file

    meta = json.loads((model_dir / "config.json").read_text())
    config = PunctConfig.from_dict(meta)
    if not end_only:
        config.mark_bias = (0.0,) * len(MARKS)
        config.case_bias = (0.0,) * len(CASES)
    model = PunctModel(config)
    model.load_state_dict({k: v.float() for k, v in load_file(str(model_dir / "model.safetensors")).items()})
    vocab = (model_dir / "vocab.txt").read_text().split("\n")[: config.vocab_size]
    featurizer = Featurizer(vocab, Lexicon.load(model_dir / "lexicon.tsv.gz"), config)
    examples = load_examples(cache)
    dev = examples[: punct_data.DEV_SIZE]
    talk = punct_data.talk_dev_examples(dev)
    if end_only:
        meta["end_bias"] = list(calibrate_end(model, featurizer, dev + talk))
        (model_dir / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        return meta
    dev_data = Encoded(dev, featurizer)
    talk_data = Encoded(talk, featurizer)
    logits = _dev_logits(model, talk_data)  # offsets move no logit: computed once for both
    model.config.mark_bias = calibrate(model, talk_data, talk, logits)
    model.config.case_bias = calibrate_case(model, talk_data, talk, logits)
    model.config.end_bias = calibrate_end(model, featurizer, dev + talk)
    meta["mark_bias"] = list(model.config.mark_bias)
    meta["case_bias"] = list(model.config.case_bias)
    meta["end_bias"] = list(model.config.end_bias)
    meta["dev"] = {k: round(v, 4) for k, v in dev_scores(model, dev_data, dev).items()}
    meta["talk_dev"] = {k: round(v, 4) for k, v in dev_scores(model, talk_data, talk).items()}
    (model_dir / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _checkpoint(model, dev_sets, best, best_state, step):
    """Keep the state that scores best on the development sets together (the book-heavy one and the
    talk-like one: selected on the first alone, the checkpoint favoured novel and Bible prose)."""
    value = 0.0
    for name, (data, examples) in zip(("dev", "talk dev"), dev_sets, strict=False):
        s = dev_scores(model, data, examples)
        # one number to select on: the Must figures, case accuracy scaled to matter as much as the F1s
        value += s["period_f1"] + s["comma_f1"] + s["question_f1"] + 10 * s["case_accuracy"]
        log.info("step %d %s %s", step, name, {k: round(v, 4) for k, v in s.items()})
    if value > best:
        best = value
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return best, best_state
