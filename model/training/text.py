"""Training text: public-domain English from Debian packages, normalized to the CTC vocabulary.

Sources (all installed by ``scripts/setup.sh train``):
  austen   — Jane Austen's six novels (r-cran-janeaustenr, R lazy-load database)
  kjv      — King James Bible (bible-kjv, dumped with ``bible -f``)
  wordnet  — example phrases of WordNet 3.0 (wordnet-base)
  fortunes — fortune cookies (fortunes)
  words    — short word sequences from stringr's 980 common words and wamerican
  numbers  — spoken numbers, digit strings and years (generated)
Harvard sentences (r-cran-stringr ``sentences``) are evaluation-only.

Every evaluation sentence is removed from training text (see :class:`EvalFilter`): exact matches after
normalization, and any utterance that shares a word 5-gram with a long evaluation sentence.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
import subprocess
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

VOCAB_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
EVAL_TSV = Path("/work/shared/eval/real/transcripts.tsv")
AUSTEN_RDATA = Path("/usr/lib/R/site-library/janeaustenr/data/Rdata")
STRINGR_RDATA = Path("/usr/lib/R/site-library/stringr/data/Rdata")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
WORDLIST = Path("/usr/share/dict/american-english")
JFK_1961 = "ask not what your country can do for you ask what you can do for your country"

# ---------------------------------------------------------------------------------------------------
# numbers

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORD = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def number_words(n: int) -> str:
    """Cardinal English words for a non-negative integer (``121`` → ``one hundred twenty one``)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    for scale, name in ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= scale:
            rest = n % scale
            return number_words(n // scale) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError


def year_words(n: int) -> str:
    """Years the way they are read: 1961 → nineteen sixty one, 1900 → nineteen hundred, 2005 → two thousand five."""
    hi, lo = divmod(n, 100)
    if 2000 <= n < 2010 or hi % 10 == 0:
        return number_words(n)
    if lo == 0:
        return number_words(hi) + " hundred"
    if lo < 10:
        return number_words(hi) + " oh " + number_words(lo)
    return number_words(hi) + " " + number_words(lo)


def ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    if last in _ORD:
        words[-1] = _ORD[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _number_token(match: re.Match) -> str:
    text = match.group(0)
    digits = text.replace(",", "")
    suffix = ""
    m = re.fullmatch(r"(\d+)(st|nd|rd|th)", digits, re.IGNORECASE)
    if m:
        return " " + ordinal_words(int(m.group(1))) + " "
    if "." in digits:
        whole, frac = digits.split(".", 1)
        return " " + number_words(int(whole or 0)) + " point " + " ".join(_ONES[int(d)] for d in frac) + " "
    n = int(digits)
    if len(digits) > 1 and digits.startswith("0"):
        return " " + " ".join("oh" if d == "0" else _ONES[int(d)] for d in digits) + " "
    if ("," not in text and 1100 <= n <= 1999) or (2010 <= n <= 2099 and "," not in text):
        return " " + year_words(n) + suffix + " "
    if n >= 10**15:
        return " " + " ".join(_ONES[int(d)] for d in digits) + " "
    return " " + number_words(n) + suffix + " "


# ---------------------------------------------------------------------------------------------------
# normalization

_ABBREVIATIONS = [
    (r"\bMr\.?(?=\s|$)", "mister"),
    (r"\bMrs\.?(?=\s|$)", "missus"),
    (r"\bMessrs\.?(?=\s|$)", "messieurs"),
    (r"\bDr\.(?=\s|$)", "doctor"),
    (r"\bSt\.(?=\s+[A-Z])", "saint"),
    (r"\bMt\.(?=\s)", "mount"),
    (r"\bProf\.(?=\s)", "professor"),
    (r"\bvs\.?(?=\s)", "versus"),
    (r"\betc\.", "et cetera"),
    (r"\be\.g\.", "for example"),
    (r"\bi\.e\.", "that is"),
    (r"\bNo\.(?=\s*\d)", "number"),
    (r"\bCapt\.(?=\s)", "captain"),
    (r"\bCol\.(?=\s)", "colonel"),
    (r"\bGen\.(?=\s)", "general"),
    (r"\bLt\.(?=\s)", "lieutenant"),
    (r"\bSgt\.(?=\s)", "sergeant"),
    (r"\bJr\.", "junior"),
    (r"\bSr\.", "senior"),
]
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "=": " equals ", "@": " at ", "#": " number "}
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u02bc": "'", "\u00b4": "'"})


def _money(match: re.Match) -> str:
    amount = match.group(1).replace(",", "")
    if "." in amount:
        dollars, cents = amount.split(".", 1)
        cents = (cents + "0")[:2]
        out = number_words(int(dollars or 0)) + " dollars"
        if int(cents):
            out += " and " + number_words(int(cents)) + " cents"
        return " " + out + " "
    n = int(amount)
    return " " + number_words(n) + (" dollar " if n == 1 else " dollars ")


# Words the older texts spell apart that are one word today: Austen's "to-day", "to-morrow", "every body",
# "any thing", the KJV's "to day"; joined except where the two words are meant ("from day to day", "from
# morning to night"). Only the word LM applies this (`build-lm`), so that it writes today's spellings:
# the training transcripts and the train/evaluation split keep the normalized source text, which the
# synthesized corpus was made from (joining there would move the text-hash split and the evaluation set).
_SPLIT_COMPOUNDS = [
    (r"(?<!\bDAY )\bTO DAY\b", "TODAY"),
    (r"\bTO MORROW\b", "TOMORROW"),
    (r"(?<!\bDAY )(?<!\bNIGHT )(?<!\bMORNING )(?<!\bNOON )\bTO NIGHT\b", "TONIGHT"),
    (r"\b(EVERY|ANY) (BODY|THING)\b", r"\1\2"),
]


def join_split_compounds(text: str) -> str:
    """Join archaic two-word spellings in normalized text (idempotent)."""
    for pattern, repl in _SPLIT_COMPOUNDS:
        text = re.sub(pattern, repl, text)
    return text


def normalize(text: str) -> str:
    """Map free text to the model vocabulary: upper-case A–Z, apostrophe, single spaces.

    Numbers are spelled out, common abbreviations expanded, ``&`` → AND, other punctuation removed,
    hyphens and dashes become spaces, quote marks around words are dropped but inner apostrophes kept.
    """
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.replace("æ", "ae").replace("Æ", "AE").replace("œ", "oe").replace("Œ", "OE")
    for pattern, repl in _ABBREVIATIONS:
        text = re.sub(pattern, repl, text)
    text = re.sub(r"\$\s?(\d[\d,]*(?:\.\d+)?)", _money, text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"\d+(?:\.\d+)?(?:st|nd|rd|th)?\b|\d+", _number_token, text)
    for sym, repl in _SYMBOLS.items():
        text = text.replace(sym, repl)
    text = text.upper()
    text = re.sub(r"[^A-Z' ]+", " ", text)
    # apostrophes only inside words (DON'T, O'CLOCK) or as a plural possessive (LADIES')
    text = re.sub(r"(?<![A-Z])'|'(?![A-Z])(?<!S')", " ", text)
    text = re.sub(r"(?<=[A-RT-Z])'(?![A-Z])", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def is_clean(text: str) -> bool:
    return bool(text) and all(c in VOCAB_CHARS or c == " " for c in text)


# ---------------------------------------------------------------------------------------------------
# evaluation sentences and their removal


def harvard_sentences() -> list[str]:
    from model.training.rdata_lite import read_lazyload

    return list(read_lazyload(STRINGR_RDATA)["sentences"])


def real_eval_transcripts(tsv: Path = EVAL_TSV) -> list[str]:
    if not tsv.exists():
        return []
    with tsv.open(newline="") as f:
        return [row["transcript"] for row in csv.DictReader(f, delimiter="\t")]


def evaluation_sentences() -> list[str]:
    """Every sentence we evaluate on, normalized: real recordings, all 720 Harvard sentences, JFK 1961."""
    out = [normalize(s) for s in real_eval_transcripts()]
    out += [normalize(s) for s in harvard_sentences()]
    out.append(normalize(JFK_1961))
    return [s for s in dict.fromkeys(out) if s]


class EvalFilter:
    """Decides whether a training utterance overlaps an evaluation sentence.

    * exact match after normalization (any length);
    * a short evaluation sentence (< ``ngram`` words) contained in an utterance of at most
      ``len + 3`` words;
    * for longer evaluation sentences, any shared word ``ngram``-gram (catches near-duplicates and
      the overlapping pieces of long sentences split into utterances).
    """

    def __init__(self, sentences: Iterable[str], ngram: int = 5) -> None:
        self.n = ngram
        self.exact: set[str] = set()
        self.short: list[tuple[str, int]] = []
        self.grams: set[tuple[str, ...]] = set()
        for s in sentences:
            s = normalize(s)
            words = s.split()
            if not words:
                continue
            self.exact.add(s)
            if len(words) < ngram:
                self.short.append((f" {s} ", len(words)))
            else:
                self.grams.update(tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1))

    def overlaps(self, text: str) -> bool:
        text = normalize(text) if not is_clean(text) else text
        if text in self.exact:
            return True
        words = text.split()
        padded = f" {text} "
        for s, n in self.short:
            if len(words) <= n + 3 and s in padded:
                return True
        return any(tuple(words[i : i + self.n]) in self.grams for i in range(len(words) - self.n + 1))


# ---------------------------------------------------------------------------------------------------
# sources → raw sentences


def _split_sentences(paragraph: str) -> list[str]:
    paragraph = re.sub(r"\s+", " ", paragraph).strip()
    paragraph = re.sub(r"\b(Mr|Mrs|Dr|St|Messrs|Mt|Capt|Col)\.", r"\1<DOT>", paragraph)
    parts = re.split(r"(?<=[.!?])[\"'\u201d\u2019)]*\s+", paragraph)
    return [p.replace("<DOT>", ".") for p in parts if p.strip()]


def austen_sentences() -> Iterator[tuple[str, str]]:
    from model.training.rdata_lite import read_lazyload

    for book, lines in read_lazyload(AUSTEN_RDATA).items():
        paragraph: list[str] = []
        for line in [*lines, ""]:
            line = line or ""
            if line.strip():
                paragraph.append(line.strip())
                continue
            if paragraph:
                text = " ".join(paragraph)
                paragraph = []
                if re.match(r"^(CHAPTER|Chapter|VOLUME|Volume)\b", text) or text.isupper():
                    continue
                for s in _split_sentences(text):
                    yield f"austen/{book}", s


def kjv_verses() -> Iterator[str]:
    """The verses of the King James Bible as written (``bible-kjv``), without their references; none when
    the package is missing."""
    try:
        out = subprocess.run(
            ["bible", "-f", "gen1:1-rev22:21"], capture_output=True, text=True, timeout=120, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return
    for line in out.splitlines():
        m = re.match(r"^\S+\d+:\d+\s+(.*)$", line)
        if m:
            yield m.group(1)


def kjv_sentences() -> Iterator[tuple[str, str]]:
    for verse in kjv_verses():
        for s in _split_sentences(verse):
            yield "kjv", s


def wordnet_sentences() -> Iterator[tuple[str, str]]:
    for pos in ("noun", "verb", "adj", "adv"):
        path = WORDNET_DIR / f"data.{pos}"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("  "):
                continue
            for ex in re.findall(r'"([^"]{12,})"', line):
                yield "wordnet", ex


def fortune_sentences() -> Iterator[tuple[str, str]]:
    if not FORTUNES_DIR.exists():
        return
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.suffix or path.is_dir() or path.name.startswith("."):
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for cookie in text.split("\n%\n"):
            lines = [ln for ln in cookie.splitlines() if not re.match(r"^\s*(--|[-\u2014]{1,2}\s*\w)", ln)]
            body = " ".join(ln.strip() for ln in lines)
            if re.search(r"[<>{}|\\/_=]{2,}|\t", cookie):  # ascii art, code
                continue
            for s in _split_sentences(body):
                yield f"fortunes/{path.name}", s


def word_sequences(seed: int = 1, count: int = 6000) -> Iterator[tuple[str, str]]:
    from model.training.rdata_lite import read_lazyload

    common = [w for w in read_lazyload(STRINGR_RDATA)["words"] if w.isalpha()]
    big = []
    if WORDLIST.exists():
        big = [w for w in WORDLIST.read_text(errors="replace").split() if re.fullmatch(r"[a-z]{3,12}", w)]
    rng = random.Random(seed)
    for _ in range(count):
        pool = common if rng.random() < 0.6 or not big else big
        yield "words", " ".join(rng.choice(pool) for _ in range(rng.randint(1, 10)))


def number_phrases(seed: int = 2, count: int = 3000) -> Iterator[tuple[str, str]]:
    rng = random.Random(seed)
    for _ in range(count):
        kind = rng.random()
        if kind < 0.3:
            text = " ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(2, 10)))
        elif kind < 0.55:
            text = " ".join(
                str(rng.choice([rng.randint(0, 20), rng.randint(0, 100), rng.randint(0, 10000)]))
                for _ in range(rng.randint(1, 4))
            )
        elif kind < 0.75:
            text = f"in {rng.randint(1100, 2030)}"
        else:
            text = f"{rng.randint(1, 999)} {rng.choice(['meters', 'miles', 'people', 'days', 'years', 'pounds'])}"
        yield "numbers", text


SOURCES = {
    "austen": austen_sentences,
    "kjv": kjv_sentences,
    "wordnet": wordnet_sentences,
    "fortunes": fortune_sentences,
    "words": word_sequences,
    "numbers": number_phrases,
}


# ---------------------------------------------------------------------------------------------------
# sentences → utterances (about 1–35 words ≈ 0.5–15 s of speech)


def chunk_words(words: list[str], max_words: int = 32, min_words: int = 4) -> list[list[str]]:
    if len(words) <= max_words:
        return [words]
    n = -(-len(words) // max_words)
    size = -(-len(words) // n)
    return [words[i : i + size] for i in range(0, len(words), size)]


def _clause_chunks(sentence: str, max_words: int) -> list[str]:
    """Split a long raw sentence at clause punctuation first, then evenly."""
    if len(sentence.split()) <= max_words:
        return [sentence]
    pieces = [p for p in re.split(r"(?<=[;:,])\s+|\s+[-\u2014]{1,2}\s*", sentence) if p.strip()]
    out: list[str] = []
    current: list[str] = []
    for piece in pieces:
        words = piece.split()
        if current and len(current) + len(words) > max_words:
            out.append(" ".join(current))
            current = []
        current.extend(words)
    if current:
        out.append(" ".join(current))
    final: list[str] = []
    for piece in out:
        final.extend(" ".join(c) for c in chunk_words(piece.split(), max_words))
    return final


@dataclass(frozen=True)
class Utterance:
    text: str
    source: str


def text_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def build_utterances(
    sources: Iterable[str] = tuple(SOURCES),
    max_words: int = 32,
    eval_filter: EvalFilter | None = None,
) -> tuple[list[Utterance], dict[str, int]]:
    """Normalized, de-duplicated, evaluation-free utterances and counts of what was dropped."""
    eval_filter = eval_filter or EvalFilter(evaluation_sentences())
    seen: set[str] = set()
    out: list[Utterance] = []
    stats = {"kept": 0, "eval_overlap": 0, "duplicate": 0, "empty": 0}
    for name in sources:
        for source, sentence in SOURCES[name]():
            # whole raw sentences that overlap evaluation text go entirely, before splitting
            if eval_filter.overlaps(normalize(sentence)):
                stats["eval_overlap"] += 1
                continue
            for piece in _clause_chunks(sentence, max_words):
                text = normalize(piece)
                if not text or len(text) < 2:
                    stats["empty"] += 1
                    continue
                if eval_filter.overlaps(text):
                    stats["eval_overlap"] += 1
                    continue
                if text in seen:
                    stats["duplicate"] += 1
                    continue
                seen.add(text)
                out.append(Utterance(text, source))
                stats["kept"] += 1
    return out, stats


def split_train_eval(
    utterances: list[Utterance], eval_per_mille: int = 3
) -> tuple[list[Utterance], list[Utterance]]:
    """Deterministic split by text hash: ~0.3 % of corpus utterances (≥ 6 words) are evaluation-only."""
    train, held = [], []
    for u in utterances:
        if (
            len(u.text.split()) >= 6
            and text_hash(u.text) % 1000 < eval_per_mille
            and u.source.startswith(("austen", "kjv", "fortunes", "wordnet"))
        ):
            held.append(u)
        else:
            train.append(u)
    return train, held
