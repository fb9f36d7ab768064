"""Text normalization, sources and the removal of evaluation sentences from training text."""

from __future__ import annotations

import pytest

from model.training import text
from model.training.text import EvalFilter, normalize, number_words, year_words


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mr. Dashwood & Mrs. Jennings", "MISTER DASHWOOD AND MISSUS JENNINGS"),
        ("He was not an ill-disposed young man.", "HE WAS NOT AN ILL DISPOSED YOUNG MAN"),
        ("It cost $3.50, or 12%.", "IT COST THREE DOLLARS AND FIFTY CENTS OR TWELVE PERCENT"),
        ("In 1813 there were 21 of them", "IN EIGHTEEN THIRTEEN THERE WERE TWENTY ONE OF THEM"),
        ("the 3rd of May", "THE THIRD OF MAY"),
        ("Don\u2019t \u2018quote\u2019 me, O'Brien's ladies'", "DON'T QUOTE ME O'BRIEN'S LADIES'"),
        ("Caf\u00e9 na\u00efve \u2014 r\u00e9sum\u00e9!", "CAFE NAIVE RESUME"),
        ("1,000,000 people", "ONE MILLION PEOPLE"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected
    assert text.is_clean(normalize(raw))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("I will see you to-day, and to-morrow.", "I WILL SEE YOU TODAY AND TOMORROW"),
        ("Every body said any thing; stay to-night", "EVERYBODY SAID ANYTHING STAY TONIGHT"),
        ("From day to day, from morning to night", "FROM DAY TO DAY FROM MORNING TO NIGHT"),
        ("To day if ye will hear his voice", "TODAY IF YE WILL HEAR HIS VOICE"),
    ],
)
def test_join_split_compounds_for_the_lm(raw: str, expected: str) -> None:
    assert normalize(raw) != expected or raw.startswith("From")  # the training text keeps the source's
    assert text.join_split_compounds(normalize(raw)) == expected
    assert text.join_split_compounds(expected) == expected


def test_number_words() -> None:
    assert number_words(0) == "zero"
    assert number_words(115) == "one hundred fifteen"
    assert number_words(2_000_013) == "two million thirteen"
    assert year_words(1961) == "nineteen sixty one"
    assert year_words(1900) == "nineteen hundred"
    assert year_words(1805) == "eighteen oh five"


def test_eval_filter_exact_ngram_and_short() -> None:
    f = EvalFilter(
        ["IF THE READER WILL EXCUSE ME I WILL SAY NOTHING OF MY ANTECEDENTS", "FRONT LEFT", "TEN OF CLUBS"]
    )
    assert f.overlaps("if the reader will excuse me, I will say nothing of my antecedents!")
    assert f.overlaps("AND I WILL SAY NOTHING OF MY ANTECEDENTS TODAY")  # shared 5-gram
    assert f.overlaps("THE FRONT LEFT")  # short sentence inside a short utterance
    assert not f.overlaps(
        "THE WHEEL AT THE FRONT LEFT OF THE CARRIAGE WAS BROKEN AGAIN"
    )  # long: only n-grams
    assert not f.overlaps("THE READER WILL EXCUSE THE DELAY")
    assert not f.overlaps("TEN CLUBS")


needs_text = pytest.mark.skipif(
    not text.STRINGR_RDATA.with_suffix(".rdb").exists(),
    reason="r-cran-stringr not installed (scripts/setup.sh train)",
)


@needs_text
def test_evaluation_sentences_cover_all_sets() -> None:
    sentences = set(text.evaluation_sentences())
    assert len(text.harvard_sentences()) == 720
    assert normalize("The birch canoe slid on the smooth planks.") in sentences
    assert normalize(text.JFK_1961) in sentences
    if text.EVAL_TSV.exists():
        assert (
            "AND MISTER JOHN DASHWOOD HAD THEN LEISURE TO CONSIDER HOW MUCH THERE MIGHT BE PRUDENTLY IN HIS "
            "POWER TO DO FOR THEM" in sentences
        )


@needs_text
def test_training_text_has_no_evaluation_sentence(monkeypatch) -> None:
    """*Sense and Sensibility* contains the LibriVox lines; none may survive into training utterances."""

    def sense_only():
        return (item for item in text.austen_sentences() if item[0] == "austen/sensesensibility")

    monkeypatch.setitem(text.SOURCES, "sense", sense_only)
    utts, stats = text.build_utterances(sources=["sense"])
    assert stats["eval_overlap"] > 0
    f = EvalFilter(text.evaluation_sentences())
    joined = "\n".join(u.text for u in utts)
    for line in (
        "HE WAS NOT AN ILL DISPOSED YOUNG MAN",
        "HE MIGHT EVEN HAVE BEEN MADE AMIABLE HIMSELF",
        "TO BE RATHER COLD HEARTED AND RATHER SELFISH",
    ):
        assert line not in joined
    assert not any(f.overlaps(u.text) for u in utts)


def test_fortunes_jfk_removed() -> None:
    f = EvalFilter([text.JFK_1961])
    assert f.overlaps("Ask not what your country can do for you -- ask what you can do for your country.")
    assert f.overlaps("AND SO MY FELLOW AMERICANS ASK NOT WHAT YOUR COUNTRY CAN DO")
