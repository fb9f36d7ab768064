"""Decoding constrained to a list of phrases (vosk's ``phrase_list``, the native protocol's ``grammar``).

The phrases are compiled into a character prefix tree over the model's CTC labels (words joined by the
word delimiter, exactly the label sequence training uses). The search runs the CTC prefix-probability
recurrence over *every* node of the tree at once, one frame at a time. For node ``n`` with label ``c``
and parent ``p``::

    nb(n, t) = (nb(n, t-1) + b(p, t-1) + [label(p) != c] nb(p, t-1)) * y_t(c)
    b(n, t)  = (b(n, t-1) + nb(n, t-1)) * y_t(blank)

so ``b + nb`` of a phrase's end node is exactly the CTC likelihood of that phrase given the frames seen:
the search agrees with scoring every phrase by the CTC loss by construction (``tests/test_grammar.py``
checks it against ``torch.nn.functional.ctc_loss``). No hypothesis is pruned; the cost is linear in the
number of tree nodes. The recurrence runs in the probability domain in float64 with one rescaling per
frame: ``np.logaddexp`` costs about 70x an addition, which would miss the budget of 5 ms per second of
audio with 1 000 phrases (``bench/bench_grammar.py``). A node more than ~700 nats below the best node of
its frame underflows to zero, which no phrase that could still win ever is.

Special tokens (``<s>``, ``</s>``, ``<unk>``) carry no text: their probability moves to blank, as in the
beam search (``model.training.decoding.BeamDecoder``).

Out of grammar: the best phrase competes with a garbage hypothesis, the unconstrained best path (the
greedy labels) less ``GARBAGE_PENALTY`` nats per frame of *speech*: the frames from the first to the last
one whose best label is a character. The silence before and after (the pause that ends an utterance, the
lead a streamed final keeps), where every reading agrees, would otherwise dilute the penalty, and a
streamed final would pay another penalty than the same speech decoded offline. When garbage wins, the result
is ``[unk]``, as vosk writes it. Confidence is the posterior of a phrase among all phrases and garbage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamer.ctc_merge import Vocabulary
from streamer.events import Word

MAX_PHRASES = 10_000
MAX_PHRASE_CHARS = 200
UNK = "[unk]"
# Nats per speech frame the garbage hypothesis pays below the unconstrained best path. Chosen on
# training material only (synthesized training voices and the real training recordings), in and out of
# grammar: the best balance of in-grammar phrases kept and out-of-grammar ones given [unk] (docs/RESULTS.md,
# "Grammars").
GARBAGE_PENALTY = 0.5
DEFAULT_HOTWORD_BOOST = 10.0
# Seconds before an utterance's first greedy character that a streamed grammar final also scores: the
# phrase is searched over the speech, not only from where the unconstrained labels first print a letter.
GRAMMAR_LEAD_S = 1.0
# Frames between two rescalings of the search's probabilities: a frame's factor is rarely below e-30
# and float64 reaches e-708, so every 4th frame is safe and saves three passes over the nodes per frame.
RESCALE_EVERY = 4


class GrammarError(ValueError):
    """A phrase list the model cannot decode (empty phrase, characters outside its vocabulary, ...)."""


def _char_map(vocab: Vocabulary) -> dict[str, int]:
    """Character -> label id for the single-character tokens that print (not blank, specials)."""
    out: dict[str, int] = {}
    for i, token in enumerate(vocab.raw_tokens):
        if len(token) == 1 and not vocab.silent[i]:
            out[token] = i
    return out


def phrase_labels(phrase: str, vocab: Vocabulary, chars: dict[str, int] | None = None) -> list[int]:
    """The CTC label sequence of ``phrase``: its characters (case folded to the vocabulary's) with the
    word delimiter between words. Raises GrammarError for an empty phrase or an unknown character."""
    chars = _char_map(vocab) if chars is None else chars
    words = phrase.split()
    if not words:
        raise GrammarError("empty phrase in the grammar")
    if len(phrase) > MAX_PHRASE_CHARS:
        raise GrammarError(f"phrase over {MAX_PHRASE_CHARS} characters: {phrase[:40]!r}...")
    labels: list[int] = []
    for k, word in enumerate(words):
        if k and vocab.delimiter_id >= 0:
            labels.append(vocab.delimiter_id)
        for c in word:
            i = chars.get(c, chars.get(c.upper(), chars.get(c.lower())))
            if i is None:
                raise GrammarError(
                    f"character {c!r} of phrase {phrase[:60]!r} is not in the model's vocabulary"
                )
            labels.append(i)
    return labels


def _label_text(labels: Sequence[int], vocab: Vocabulary) -> str:
    return "".join(vocab.char(i) for i in labels)


def check_phrases(phrases: object, what: str = "grammar") -> list[str]:
    """Type and size checks that need no model: a list of at most MAX_PHRASES strings."""
    if not isinstance(phrases, list):
        raise GrammarError(f"{what} must be a list of phrases, got {type(phrases).__name__}")
    if len(phrases) > MAX_PHRASES:
        raise GrammarError(f"{what} has {len(phrases)} phrases; at most {MAX_PHRASES} are allowed")
    for p in phrases:
        if not isinstance(p, str):
            raise GrammarError(f"{what} phrases must be strings, got {p!r:.40}")
        if not p.strip():
            raise GrammarError(f"empty phrase in the {what}")
    return phrases


@dataclass(frozen=True)
class Alternative:
    text: str
    confidence: float
    log_likelihood: float  # CTC log-likelihood of the phrase (garbage: its own score)


@dataclass(frozen=True)
class GrammarResult:
    text: str  # the best phrase, or UNK when out of grammar
    confidence: float
    alternatives: tuple[Alternative, ...] = field(default=())  # best first, garbage included as UNK

    @property
    def out_of_grammar(self) -> bool:
        return self.text == UNK


class Grammar:
    """A compiled phrase list: the prefix tree, ready to search many utterances (immutable, shareable).

    ``phrases`` may contain ``"[unk]"`` (vosk's explicit out-of-grammar entry): it is no phrase, it only
    says garbage may win, which it may anyway unless ``garbage_penalty`` is None.
    """

    def __init__(
        self,
        phrases: Iterable[str],
        vocab: Vocabulary,
        *,
        garbage_penalty: float | None = GARBAGE_PENALTY,
    ) -> None:
        self.vocab = vocab
        self.garbage_penalty = garbage_penalty
        chars = _char_map(vocab)
        # node 0 is the root (the empty prefix); children are keyed (parent, label)
        labels, parents = [len(vocab.raw_tokens)], [0]
        child: dict[tuple[int, int], int] = {}
        self.phrases: list[str] = []  # canonical text: vocabulary case, single spaces
        ends: list[int] = []
        seen: set[int] = set()
        for phrase in phrases:
            if phrase.strip().lower() == UNK:
                continue
            seq = phrase_labels(phrase, vocab, chars)
            node = 0
            for c in seq:
                nxt = child.get((node, c))
                if nxt is None:
                    nxt = child[(node, c)] = len(labels)
                    labels.append(c)
                    parents.append(node)
                node = nxt
            if node in seen:  # the same phrase again (maybe in another case)
                continue
            seen.add(node)
            ends.append(node)
            self.phrases.append(_label_text(seq, vocab))
        if not self.phrases:
            raise GrammarError("the grammar has no phrase")
        if len(self.phrases) > MAX_PHRASES:
            raise GrammarError(f"grammar has {len(self.phrases)} phrases; at most {MAX_PHRASES} are allowed")
        self.labels = np.array(labels, dtype=np.int64)  # (nodes,); the root's label is vocab size: y = 0
        self.parents = np.array(parents, dtype=np.int64)  # (nodes,)
        # a repeated label needs a blank between parent and child: nb(parent) does not feed the child
        self.repeats = np.flatnonzero(self.labels == self.labels[self.parents])[1:]  # (k,) not the root
        self.repeat_parents = self.parents[self.repeats]
        self.ends = np.array(ends, dtype=np.int64)  # (phrases,) end node of each phrase
        self.is_end = np.zeros(len(labels), dtype=bool)  # (nodes,)
        self.is_end[self.ends] = True
        self.blank_id = vocab.blank_id
        self.special_ids = np.array(
            [i for i in np.flatnonzero(vocab.silent) if i not in (vocab.blank_id, vocab.delimiter_id)],
            dtype=np.int64,
        )
        self._node_text: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.phrases)

    @property
    def nodes(self) -> int:
        return len(self.labels)

    def search(self) -> GrammarSearch:
        return GrammarSearch(self)

    def decode(self, log_probs: np.ndarray, max_alternatives: int = 0) -> GrammarResult:
        """Offline: the best phrase over a whole utterance's (frames, vocab) log-probabilities."""
        search = self.search()
        search.advance(log_probs)
        return search.result(max_alternatives)

    def node_text(self, node: int) -> str:
        """The prefix a node spells."""
        text = self._node_text.get(node)
        if text is None:
            seq = []
            n = node
            while n:
                seq.append(int(self.labels[n]))
                n = int(self.parents[n])
            text = _label_text(seq[::-1], self.vocab)
            if len(self._node_text) < 100_000:
                self._node_text[node] = text
        return text

    def frame_probs(self, log_probs: np.ndarray) -> np.ndarray:
        """(frames, vocab + 1) float64 probabilities, specials folded into blank, a zero column for the root."""
        lp = np.asarray(log_probs, dtype=np.float64)
        y = np.exp(lp - lp.max(axis=1, keepdims=True))  # per-frame scale, undone by `frame_log_scale`
        if len(self.special_ids):
            y[:, self.blank_id] += y[:, self.special_ids].sum(axis=1)
            y[:, self.special_ids] = 0.0
        return np.concatenate([y, np.zeros((len(y), 1))], axis=1)


class GrammarSearch:
    """The incremental search of one utterance: ``advance`` frames as they come (streaming), read the
    best phrase at any time; ``copy`` to look ahead without committing."""

    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        n = grammar.nodes
        self.b = np.zeros(n)  # (nodes,) scaled probability of the prefix, paths ending in blank
        self.nb = np.zeros(n)  # (nodes,) ... ending in the prefix's last label
        self.b[0] = 1.0
        self.log_scale = 0.0  # log of the factor taken out of b and nb
        self.frames = 0
        self.greedy_log_prob = 0.0  # the unconstrained best path's log-probability (specials to blank)
        self.first_letter = -1  # first and last frame whose best label is a character (-1: none yet)
        self.last_letter = -1
        self._from_parent = np.empty(n)
        self._tmp = np.empty(n)

    def copy(self) -> GrammarSearch:
        other = GrammarSearch.__new__(GrammarSearch)
        other.grammar = self.grammar
        other.b, other.nb = self.b.copy(), self.nb.copy()
        other.log_scale, other.frames, other.greedy_log_prob = (
            self.log_scale,
            self.frames,
            self.greedy_log_prob,
        )
        other.first_letter, other.last_letter = self.first_letter, self.last_letter
        other._from_parent, other._tmp = np.empty_like(self.b), np.empty_like(self.b)
        return other

    def advance(self, log_probs: np.ndarray) -> None:
        """Take (frames, vocab) log-softmax outputs."""
        if log_probs is None or len(log_probs) == 0:
            return
        g = self.grammar
        lp = np.asarray(log_probs, dtype=np.float64)
        frame_max = lp.max(axis=1)
        y = g.frame_probs(lp)
        self.greedy_log_prob += float(np.log(y[:, :-1].max(axis=1)).sum() + frame_max.sum())
        letters = np.flatnonzero(~g.vocab.silent[y[:, :-1].argmax(axis=1)])
        if len(letters):
            if self.first_letter < 0:
                self.first_letter = self.frames + int(letters[0])
            self.last_letter = self.frames + int(letters[-1])
        self.log_scale += float(frame_max.sum())
        b, nb, fp, total = self.b, self.nb, self._from_parent, self._tmp
        parents, labels, blank = g.parents, g.labels, g.blank_id
        repeats, repeat_parents = g.repeats, g.repeat_parents
        for t, yt in enumerate(y, start=self.frames):
            np.add(b, nb, out=total)  # (nodes,) probability of each prefix so far
            if t % RESCALE_EVERY == 0:
                top = float(total.max())
                if top <= 0.0:  # nothing left (cannot happen with softmax outputs and a blank)
                    top = 1e-300
                scale = 1.0 / top
                b *= scale
                nb *= scale
                total *= scale
                self.log_scale += math.log(top)
            np.take(total, parents, out=fp)  # entering each node from its parent ...
            fp[repeats] = b[repeat_parents]  # ... after a blank only, where the label repeats
            nb += fp
            nb *= yt[labels]
            np.multiply(total, yt[blank], out=b)
        self.frames += len(y)

    def scores(self) -> np.ndarray:
        """(phrases,) CTC log-likelihood of each phrase given the frames so far (-inf: underflowed)."""
        total = self.b[self.grammar.ends] + self.nb[self.grammar.ends]
        with np.errstate(divide="ignore"):
            return np.log(total) + self.log_scale

    def garbage_score(self) -> float | None:
        penalty = self.grammar.garbage_penalty
        if penalty is None:
            return None
        return self.greedy_log_prob - penalty * self.speech_frames

    @property
    def speech_frames(self) -> int:
        """Frames from the first to the last one whose best label is a character: the speech the
        garbage penalty counts (not the silence around it, where every reading agrees)."""
        return 0 if self.first_letter < 0 else self.last_letter - self.first_letter + 1

    def may_end(self) -> bool:
        """Could the utterance end here? Yes when the most probable prefix is a whole phrase or empty, or
        when even that prefix is less likely than garbage (the speech fits no phrase)."""
        g = self.grammar
        total = self.b + self.nb
        node = int(np.argmax(total))
        if node == 0 or g.is_end[node]:
            return True
        garbage = self.garbage_score()
        if garbage is None:
            return False
        with np.errstate(divide="ignore"):
            return bool(np.log(total[node]) + self.log_scale < garbage)

    def best_prefix(self) -> str:
        """Text of the most probable prefix so far (a partial): a phrase or the start of one."""
        node = int(np.argmax(self.b + self.nb))
        return self.grammar.node_text(node)

    def result(self, max_alternatives: int = 0) -> GrammarResult:
        g = self.grammar
        scores = self.scores()
        garbage = self.garbage_score()
        everything = scores if garbage is None else np.append(scores, garbage)
        top = float(everything.max())
        if not math.isfinite(top):
            return GrammarResult(UNK, 0.0, (Alternative(UNK, 0.0, top),) if max_alternatives else ())
        posterior = np.exp(everything - top)
        posterior /= posterior.sum()
        order = np.argsort(-everything, kind="stable")
        best = int(order[0])
        text = g.phrases[best] if best < len(scores) else UNK
        alternatives: tuple[Alternative, ...] = ()
        if max_alternatives > 0:
            alternatives = tuple(
                Alternative(
                    g.phrases[k] if k < len(scores) else UNK,
                    round(float(posterior[k]), 6),
                    float(everything[k]),
                )
                for k in (int(i) for i in order[:max_alternatives])
                if math.isfinite(everything[k])
            )
        return GrammarResult(text, round(float(posterior[best]), 6), alternatives)


def align_words(
    text: str,
    log_probs: np.ndarray,
    vocab: Vocabulary,
    frame_seconds: float,
    time_offset: float,
    confidence: float,
) -> tuple[Word, ...]:
    """Word times of ``text`` in the frames by a CTC Viterbi (forced) alignment; every word carries
    ``confidence`` (the phrase's posterior, vosk's meaning of a word's ``conf`` under a grammar)."""
    if text == UNK or not text:
        n = len(log_probs)
        return (Word(text, round(time_offset, 3), round(time_offset + n * frame_seconds, 3), confidence),)
    labels = phrase_labels(text, vocab)
    lp = np.asarray(log_probs, dtype=np.float64).copy()
    specials = [i for i in np.flatnonzero(vocab.silent) if i not in (vocab.blank_id, vocab.delimiter_id)]
    if specials:
        lp[:, vocab.blank_id] = np.logaddexp.reduce(lp[:, [vocab.blank_id, *specials]], axis=1)
    states = [vocab.blank_id]
    for c in labels:
        states += [c, vocab.blank_id]
    s = np.array(states)  # (2L+1,) blank, l1, blank, l2, ..., blank
    n_states, n_frames = len(s), len(lp)
    skip = np.zeros(n_states, dtype=bool)  # may come from two states back (a label after another label)
    skip[3::2] = s[3::2] != s[1:-2:2]
    score = np.full(n_states, -np.inf)
    score[0] = lp[0, s[0]] if n_frames else 0.0
    if n_states > 1 and n_frames:
        score[1] = lp[0, s[1]]
    back = np.zeros((n_frames, n_states), dtype=np.int8)  # 0 stay, 1 from previous, 2 from two back
    for t in range(1, n_frames):
        stay = score
        prev = np.concatenate([[-np.inf], score[:-1]])
        prev2 = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        choice = np.argmax(np.stack([stay, prev, prev2]), axis=0)
        score = np.choose(choice, [stay, prev, prev2]) + lp[t, s]
        back[t] = choice
    state = n_states - 1 if n_states == 1 or score[-1] >= score[-2] else n_states - 2
    frames_of = [-1] * n_frames
    for t in range(n_frames - 1, -1, -1):
        frames_of[t] = state
        state -= int(back[t, state])
    # label position k (state 2k+1) -> frames; words split at the delimiter
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t, st in enumerate(frames_of):
        if st % 2 == 1:
            k = st // 2
            first.setdefault(k, t)
            last[k] = t
    words: list[Word] = []
    start_k = 0
    for k in range(len(labels) + 1):
        if k == len(labels) or labels[k] == vocab.delimiter_id:
            ks = [j for j in range(start_k, k) if j in first]
            word = _label_text(labels[start_k:k], vocab)
            if word:
                a = first[ks[0]] if ks else 0
                b = last[ks[-1]] + 1 if ks else n_frames
                words.append(
                    Word(
                        word,
                        round(time_offset + a * frame_seconds, 3),
                        round(time_offset + b * frame_seconds, 3),
                        confidence,
                    )
                )
            start_k = k + 1
    return tuple(words)


@dataclass(frozen=True)
class Hotword:
    phrase: str
    boost: float = DEFAULT_HOTWORD_BOOST


def check_hotwords(items: object, vocab: Vocabulary | None = None) -> tuple[Hotword, ...]:
    """``[{"phrase": str, "boost": number}, ...]`` (or Hotword objects) validated: non-empty phrases in
    the vocabulary, a finite boost, at most MAX_PHRASES entries."""
    if not isinstance(items, list | tuple):
        raise GrammarError(f"hotwords must be a list, got {type(items).__name__}")
    if len(items) > MAX_PHRASES:
        raise GrammarError(f"{len(items)} hotwords; at most {MAX_PHRASES} are allowed")
    out = []
    chars = _char_map(vocab) if vocab is not None else None
    for item in items:
        if isinstance(item, Hotword):
            phrase, boost = item.phrase, item.boost
        elif isinstance(item, dict):
            phrase, boost = item.get("phrase"), item.get("boost", DEFAULT_HOTWORD_BOOST)
            unknown = set(item) - {"phrase", "boost"}
            if unknown:
                raise GrammarError(f"hotword has unknown fields {sorted(unknown)}")
        else:
            raise GrammarError(f'a hotword is {{"phrase": ..., "boost": ...}}, got {item!r:.40}')
        if not isinstance(phrase, str) or not phrase.strip():
            raise GrammarError("hotword phrase must be a non-empty string")
        if isinstance(boost, bool) or not isinstance(boost, int | float) or not math.isfinite(boost):
            raise GrammarError(f"hotword boost must be a finite number, got {boost!r:.40}")
        if abs(boost) > 100:
            raise GrammarError(f"hotword boost {boost} outside -100..100")
        if vocab is not None:
            labels = phrase_labels(phrase, vocab, chars)
            phrase = _label_text(labels, vocab)
        out.append(Hotword(" ".join(phrase.split()), float(boost)))
    return tuple(out)


def parse_hotword_arg(text: str) -> Hotword:
    """``PHRASE[:BOOST]`` of the command lines' ``--hotword``."""
    phrase, sep, boost = text.rpartition(":")
    if sep and phrase.strip():
        try:
            return Hotword(phrase.strip(), float(boost))
        except ValueError:
            pass
    return Hotword(text.strip())


def read_grammar_file(path: str) -> list[str]:
    """One phrase per line; blank lines and lines starting with ``#`` are skipped."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


@dataclass(frozen=True)
class DecodingOptions:
    """What one stream asks of its decoding: a grammar (a hard constraint on every utterance), hotwords
    (a soft boost inside the normal beam search) and how many alternatives its finals carry."""

    grammar: Grammar | None = None
    hotwords: tuple[Hotword, ...] = ()
    max_alternatives: int = 0

    @property
    def keeps_frames(self) -> bool:
        """Does decoding need the utterance's frame log-probabilities (not only the greedy labels)?"""
        return self.grammar is not None or bool(self.hotwords)


MAX_ALTERNATIVES = 100


def check_max_alternatives(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise GrammarError(f"max_alternatives must be a whole number, got {value!r:.40}")
    if not 0 <= value <= MAX_ALTERNATIVES:
        raise GrammarError(f"max_alternatives must be within 0..{MAX_ALTERNATIVES}, got {value}")
    return int(value)
