"""Labelled examples for the punctuation and casing model, shaped like the recognizer's finals.

Every example is what the daemon would hand the model (lower-case words, no marks, numbers spelled
out, apostrophes kept) plus, per word, its case class and the mark after it, read off the original
cased and punctuated text of a public-domain source:

  training  — austen, kjv, fortunes, wordnet (``model.training.text``'s sources, original text), and
              everyday talk generated from templates written here (``punct_dialogue``);
  held out  — Moby-Dick (r-cran-tokenizers' ``mobydick``, Project Gutenberg, public domain): a source
              and an author the model never sees, used only by ``bench/bench_punctuation.py``;
              the Harvard sentences (r-cran-stringr), evaluation-only throughout the project.

Marks are mapped onto the four the model writes: ``; : -- —`` become a comma (the reader's pause),
``...`` a period. An utterance is 1-3 consecutive sentences of one paragraph; about one in ten is a
fragment (a sentence cut where a pause could have split it), as the endpointer produces. Training
finals hold 1-4 sentences, and sources whose paragraphs are single sentences (verses, glosses, fortune
lines) are joined in runs first, so that sentence boundaries inside a final are common.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from model.punctuation import MARKS
from model.training import text as text_sources

MOBYDICK_RDATA = Path("/usr/lib/R/site-library/tokenizers/data/Rdata")
MAX_WORDS = 48  # longer utterances are cut into fragments (finals rarely run past ~15 s)

_ABBREV_DOT = re.compile(r"\b(Mr|Mrs|Dr|St|Messrs|Mt|Capt|Col|Gen|Lt|Sgt|Prof|Jr|Sr|Rev|Hon|No|vs)\.")
_INITIAL_DOT = re.compile(r"\b([A-Z])\.(?=\s*[A-Z][.a-z])")
_DASHES = re.compile(r"\s*(?:--+|\u2014|\u2013)\s*")
_WORD = re.compile(r"[A-Za-z0-9\u00c0-\u024f]")


@dataclass(frozen=True)
class Example:
    words: tuple[str, ...]  # lower case, as a final carries them
    cases: tuple[int, ...]  # index into CASES
    marks: tuple[int, ...]  # index into MARKS

    def reference(self) -> str:
        """The readable text this example stands for (``model.punctuation.render``)."""
        from model.punctuation import render

        return " ".join(render(self.words, self.cases, self.marks))


def case_class(token: str) -> int:
    """0 lower, 1 Capitalized, 2 ALL CAPS (two or more letters, all upper). Mixed case counts as its first letter."""
    letters = [c for c in token if c.isalpha()]
    if not letters:
        return 0
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return 2
    return 1 if letters[0].isupper() else 0


def mark_class(gap: str) -> int:
    """The mark a reader would put for the punctuation between two words."""
    if "?" in gap:
        return MARKS.index("?")
    if "!" in gap:
        return MARKS.index("!")
    if "." in gap:
        return MARKS.index(".")
    if any(c in gap for c in ",;:") or "--" in gap or "\u2014" in gap or "\u2013" in gap:
        return MARKS.index(",")
    return 0


def label_sentence(sentence: str) -> Example | None:
    """Words, cases and marks of one piece of original text; None if nothing speakable is left."""
    s = _ABBREV_DOT.sub(r"\1", sentence)
    s = _INITIAL_DOT.sub(r"\1", s)
    s = _DASHES.sub(" -- ", s)
    words: list[str] = []
    cases: list[int] = []
    marks: list[int] = []
    for token in s.split():
        if not _WORD.search(token):  # a lone mark ("--", "?"): it belongs to the word before
            if marks:
                marks[-1] = max(marks[-1], mark_class(token), key=_mark_rank)
            continue
        m = re.match(r"^(\W*)(.*?)(\W*)$", token)
        assert m is not None
        core, tail = m.group(2), m.group(3)
        start = len(words)
        # hyphenated and dashed compounds are spoken as separate words, each keeping its own case
        for part in re.split(r"[-\u2010\u2011]+", core):
            spoken = _speak(part)
            if not spoken:
                continue
            cls = case_class(part) if re.search(r"[A-Za-z]", part) else 0
            for w in spoken:
                words.append(w)
                cases.append(cls)
                marks.append(0)
        if len(words) > start:
            marks[-1] = mark_class(tail)
        elif marks:  # the token spoke nothing ("'"), its marks still count
            marks[-1] = max(marks[-1], mark_class(tail), key=_mark_rank)
    if not words:
        return None
    return Example(tuple(words), tuple(cases), tuple(marks))


_PLAIN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_EXPANDED = {"mr", "mrs", "messrs", "vs", "etc", "jr", "sr", "capt", "col", "gen", "lt", "sgt"}


def _speak(part: str) -> list[str]:
    """The words a recognizer would write for one piece of a token (fast path for plain words)."""
    if _PLAIN.fullmatch(part) and part.lower() not in _EXPANDED:
        return [part.lower()]
    return text_sources.normalize(part).lower().split()


def _mark_rank(mark: int) -> int:
    return ("", ",", ".", "!", "?").index(MARKS[mark])


def _join(parts: list[Example]) -> Example:
    return Example(
        tuple(w for p in parts for w in p.words),
        tuple(c for p in parts for c in p.cases),
        tuple(m for p in parts for m in p.marks),
    )


def _cut(ex: Example, a: int, b: int) -> Example:
    return Example(ex.words[a:b], ex.cases[a:b], ex.marks[a:b])


HELDOUT_SENTENCES = (1, 1, 1, 2, 2, 3)
# training finals hold more sentence boundaries than the held-out ones: a boundary inside a final is
# the hard case (the last word of a final is nearly always one), and it is rare in 1-sentence finals
TRAIN_SENTENCES = (1, 2, 2, 3, 3, 4)


def utterances(
    paragraphs: Iterable[list[str]],
    seed: int,
    fragment_rate: float = 0.1,
    sentences_per_final: Sequence[int] = HELDOUT_SENTENCES,
) -> Iterator[Example]:
    """Group the sentences of each paragraph into finals of ``sentences_per_final`` sentences (one
    drawn per final) or fragments."""
    rng = random.Random(seed)
    for sentences in paragraphs:
        labelled = [e for e in (label_sentence(s) for s in sentences) if e is not None]
        i = 0
        while i < len(labelled):
            n = rng.choice(sentences_per_final)
            ex = _join(labelled[i : i + n])
            i += n
            if rng.random() < fragment_rate and len(ex.words) >= 6:
                cut = rng.randint(2, len(ex.words) - 2)
                yield from (_cut(ex, 0, cut), _cut(ex, cut, len(ex.words)))
                continue
            while len(ex.words) > MAX_WORDS:  # a long sentence: the endpointer splits it at a pause
                cut = rng.randint(MAX_WORDS // 2, MAX_WORDS)
                commas = [k + 1 for k in range(MAX_WORDS // 3, MAX_WORDS) if ex.marks[k] == 1]
                if commas:
                    cut = rng.choice(commas)
                yield _cut(ex, 0, cut)
                ex = _cut(ex, cut, len(ex.words))
            yield ex


# ------------------------------------------------------------------------------------------ sources


def _paragraph_sentences(paragraph: str) -> list[str]:
    return text_sources._split_sentences(paragraph)


def austen_paragraphs() -> Iterator[list[str]]:
    from model.training.rdata_lite import read_lazyload

    for lines in read_lazyload(text_sources.AUSTEN_RDATA).values():
        block: list[str] = []
        for line in [*lines, ""]:
            if line and line.strip():
                block.append(line.strip())
                continue
            if block:
                para = " ".join(block)
                block = []
                if re.match(r"^(CHAPTER|Chapter|VOLUME|Volume)\b", para) or para.isupper():
                    continue
                yield _paragraph_sentences(para)


def consecutive(paragraphs: Iterable[list[str]], size: int) -> Iterator[list[str]]:
    """Runs of ``size`` consecutive one-sentence paragraphs (verses, glosses, fortune lines) joined, so
    that finals made of them can hold a sentence boundary, as finals of running speech do."""
    block: list[str] = []
    for k, sentences in enumerate(paragraphs, 1):
        block += sentences
        if k % size == 0:
            yield block
            block = []
    if block:
        yield block


def kjv_paragraphs() -> Iterator[list[str]]:
    """Every other run of 8 verses: the whole Bible would be 40% of the training words, and its archaic
    prose (verses joined by ``and``, colons everywhere) is the furthest of the sources from speech."""
    # small capitals of the divine name are typography, not spoken emphasis
    verses = ([re.sub(r"\bLORD\b", "Lord", v).replace("GOD", "God")] for v in text_sources.kjv_verses())
    for i, run in enumerate(consecutive(verses, 8)):
        if i % 2 == 0:
            yield [s for verse in run for s in _paragraph_sentences(verse)]


def fortune_paragraphs() -> Iterator[list[str]]:
    for _source, sentence in text_sources.fortune_sentences():
        if sentence.isupper() or re.search(r"[<>{}|\\/_=@#$%^*~]", sentence):
            continue
        yield [sentence]


def wordnet_paragraphs() -> Iterator[list[str]]:
    """WordNet's example phrases are mostly sentence-shaped but written without the capital and the
    full stop; those that start with a lower-case word are given both, as a reader would."""
    for _source, phrase in text_sources.wordnet_sentences():
        phrase = phrase.strip()
        if not phrase or not phrase[0].isalpha():
            continue
        if phrase[0].islower():
            phrase = phrase[0].upper() + phrase[1:]
        if phrase[-1] not in ".?!":
            phrase += (
                "?"
                if re.match(r"(?i)(who|what|where|when|why|how|is|are|do|does|did|can|will)\b", phrase)
                else "."
            )
        yield [phrase]


def mobydick_paragraphs() -> Iterator[list[str]]:
    """Moby-Dick by Herman Melville (1851), the held-out source: chapters' prose paragraphs only."""
    from model.training.rdata_lite import read_lazyload

    text = read_lazyload(MOBYDICK_RDATA)["mobydick"][0]
    start = text.find("CHAPTER 1. Loomings.")
    end = text.find("End of Project Gutenberg", start)
    body = text[start : end if end > 0 else None]
    for para in re.split(r"\n\s*\n", body):
        para = " ".join(para.split())
        if not para or para.isupper() or re.match(r"^(CHAPTER|Epilogue|\*)", para):
            continue
        yield _paragraph_sentences(para)


TRAIN_SOURCES = {
    "austen": austen_paragraphs,
    "kjv": kjv_paragraphs,
    "fortunes": lambda: consecutive(fortune_paragraphs(), 4),
    "wordnet": lambda: consecutive(wordnet_paragraphs(), 4),
}


def harvard_paragraphs() -> Iterator[list[str]]:
    """The 720 Harvard sentences (r-cran-stringr's ``sentences``) in their 72 lists of ten: plain
    modern statements, an evaluation-only source of the whole project (``text.EvalFilter`` keeps them
    out of every training set)."""
    sentences = text_sources.harvard_sentences()
    for i in range(0, len(sentences), 10):
        yield sentences[i : i + 10]


HELDOUT_SOURCES = {"mobydick": mobydick_paragraphs, "harvard": harvard_paragraphs}


WRITTEN_HELDOUT = Path(__file__).resolve().parents[2] / "bench" / "data" / "punct_heldout.txt"
# ~330k words, ~18% of the book sources' 1.5M (questions are then repeated); 2 800 (8%) before session 14,
# when the generator had a third of its templates and ~150 names
DIALOGUE_PARAGRAPHS = 7000
DEV_SIZE = 3000  # the first utterances of ``training_examples``: the development set


def text_lines(path: Path) -> list[str]:
    """The sentences of a set written here (``bench/data/punct_*.txt``): one per line, ``#`` comments."""
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def labelled_lines(path: Path) -> list[Example]:
    """``text_lines`` of ``path``, labelled (the written sets' references)."""
    return [e for e in map(label_sentence, text_lines(path)) if e is not None]


def heldout_filter() -> text_sources.EvalFilter:
    """Every sentence the punctuation model is scored on or the recognizer is evaluated on."""
    sentences = text_sources.evaluation_sentences()
    if WRITTEN_HELDOUT.exists():
        sentences += text_lines(WRITTEN_HELDOUT)
    return text_sources.EvalFilter(sentences)


def dialogue_paragraphs() -> Iterator[list[str]]:
    """Generated everyday talk (``punct_dialogue``), without any sentence of the held-out sets."""
    from model.training.punct_dialogue import dialogue_paragraphs as generate

    heldout = heldout_filter()
    return generate(DIALOGUE_PARAGRAPHS, keep=lambda s: not heldout.overlaps(s))


TALK_DEV_PARAGRAPHS = 900  # ~3 000 finals, ~25 000 words
TALK_DEV_SEED = 5011  # the training talk is generated with the generator's default seed (11)
TALK_DEV_MAX_WORDS = 24  # development finals as long as spoken ones (eval/real's are ~8 words)


def talk_dev_examples(dev: Sequence[Example], seed: int = 3) -> list[Example]:
    """The talk-like development set the mark offsets are chosen on (``punct_train.calibrate``).

    The book-heavy development set (``training_examples``' first ``DEV_SIZE``) has finals of ~20 words
    of novel and Bible prose; offsets chosen there put commas before "and" in lists and periods inside
    short spoken commands. This set is generated talk of another seed (``TALK_DEV_SEED``: same
    templates as the training talk, other draws), grouped into finals of 1-3 sentences as the held-out
    finals are, plus those development finals of at most ``TALK_DEV_MAX_WORDS`` words. Held-out and
    evaluation sentences are filtered out as for training; no held-out set is used.
    """
    from model.training.punct_dialogue import dialogue_paragraphs as generate

    heldout = heldout_filter()
    talk = generate(TALK_DEV_PARAGRAPHS, seed=TALK_DEV_SEED, keep=lambda s: not heldout.overlaps(s))
    return list(utterances(talk, seed=seed)) + [ex for ex in dev if len(ex.words) <= TALK_DEV_MAX_WORDS]


# Session 16: finals of ONE short sentence. In the other sources a 2-4 word final is most often a fragment
# (a cut sentence, no end mark: 76-84% of them end with a mark against ~90% of longer ones) and 1-word
# finals are nearly absent, so the model left short spoken finals unfinished ("Stop", "Which one").
SHORT_MAX_WORDS = 8
SHORT_SEED = 23  # the training talk uses the generator's seed 11, the talk-like development set 5011
# one-word answers and commands, written here (split where used); the questions among them take "?"
ONE_WORD = (
    "yes no okay sure thanks right stop hello hi goodbye sorry exactly maybe absolutely definitely great "
    "perfect done ready wait continue cancel pause correct fine nothing everything later now here there "
    "cheers bye please agreed understood go left forward enough"
)
ONE_WORD_QUESTIONS = "why what where when who how seriously pardon"
SHORT_DEV = WRITTEN_HELDOUT.with_name("punct_dev_short.txt")  # a development set (bench_punctuation.py)
# a development set written like the held-out one (bench_punctuation.py)
WRITTEN_DEV = WRITTEN_HELDOUT.with_name("punct_dev_written.txt")


def whole_final_dev_examples() -> list[Example]:
    """The development sets of whole finals (written and short), where every line ends a sentence."""
    return [e for path in (WRITTEN_DEV, SHORT_DEV) if path.exists() for e in labelled_lines(path)]


def short_examples(stretches: int, seed: int = SHORT_SEED, one_word_repeats: int = 10) -> list[Example]:
    """Finals of at most ``SHORT_MAX_WORDS`` words: the short lines of ``stretches`` stretches of
    generated talk (seed ``SHORT_SEED``; a line is one sentence, or a greeting and its vocative before
    one: "Hi, Chloe. Where did you grow up?"), each a final of its own, plus one-word answers.
    Held-out and evaluation sentences are dropped, and so is every final of the short development set
    (bench/data/punct_dev_short.txt), so that it stays a fair comparison."""
    from model.training.punct_dialogue import dialogue_paragraphs as generate

    heldout = heldout_filter()
    dev = {e.words for e in labelled_lines(SHORT_DEV)} if SHORT_DEV.exists() else set()
    out = []
    for talk in generate(stretches, seed=seed, keep=lambda s: not heldout.overlaps(s)):
        for sentence in talk:
            ex = label_sentence(sentence)
            if ex is not None and len(ex.words) <= SHORT_MAX_WORDS and ex.words not in dev:
                out.append(ex)
    period, question = MARKS.index("."), MARKS.index("?")
    for words, mark in [(ONE_WORD, period), (ONE_WORD_QUESTIONS, question)]:
        out += [Example((w,), (1,), (mark,)) for w in words.split() if (w,) not in dev] * one_word_repeats
    random.Random(seed).shuffle(out)
    return out


def training_examples(seed: int = 1, short_stretches: int = 0) -> list[Example]:
    """All training utterances, with every evaluation sentence of the recognizer removed
    (``text.EvalFilter``: eval/real, Harvard sentences, JFK).

    The book utterances are shuffled as they were before the dialogue source existed, and the
    development set (the first ``DEV_SIZE``) is drawn from the old one plus the dialogue's share, so
    that a model continued with ``--init`` is never selected or calibrated on text it trained on.
    ``short_stretches``: add the short one-sentence finals of that many stretches (``short_examples``).
    """
    evaluation = text_sources.EvalFilter(text_sources.evaluation_sentences())

    def labelled(source: Callable[[], Iterable[list[str]]], k: int) -> list[Example]:
        finals = utterances(source(), seed=seed + k, sentences_per_final=TRAIN_SENTENCES)
        return [ex for ex in finals if not evaluation.overlaps(" ".join(ex.words).upper())]

    books = [ex for k, source in enumerate(TRAIN_SOURCES.values()) for ex in labelled(source, k)]
    random.Random(seed).shuffle(books)
    talk = labelled(dialogue_paragraphs, len(TRAIN_SOURCES))
    random.Random(seed).shuffle(talk)
    n = DEV_SIZE * len(talk) // (len(books) + len(talk))
    rest = books[DEV_SIZE - n :] + talk[n:]
    random.Random(seed).shuffle(rest)
    if short_stretches:  # after the shuffle: the development cut and the other finals stay as they were
        rest += short_examples(short_stretches)
    return books[: DEV_SIZE - n] + talk[:n] + rest


def heldout_examples(seed: int = 7, limit: int | None = None, source: str = "mobydick") -> list[Example]:
    out = list(utterances(HELDOUT_SOURCES[source](), seed=seed))
    random.Random(seed).shuffle(out)
    return out[:limit] if limit else out
