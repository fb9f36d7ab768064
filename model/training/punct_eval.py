"""Scores of a punctuation/casing output against a reference: F1 per mark, case accuracy per word."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from model.punctuation import MARKS, apply_case


@dataclass
class Scores:
    words: int = 0
    case_correct: int = 0
    tp: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MARKS[1:], 0))
    fp: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MARKS[1:], 0))
    fn: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MARKS[1:], 0))

    def add(
        self,
        words: Sequence[str],
        ref_cases: Sequence[int],
        ref_marks: Sequence[int],
        cases: Sequence[int],
        marks: Sequence[int],
    ) -> None:
        for w, rc, rm, c, m in zip(words, ref_cases, ref_marks, cases, marks, strict=True):
            self.words += 1
            self.case_correct += apply_case(w, rc) == apply_case(w, c)
            ref, hyp = MARKS[rm], MARKS[m]
            if ref and ref == hyp:
                self.tp[ref] += 1
                continue
            if ref:
                self.fn[ref] += 1
            if hyp:
                self.fp[hyp] += 1

    def f1(self, mark: str) -> float:
        tp, fp, fn = self.tp[mark], self.fp[mark], self.fn[mark]
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")

    @property
    def case_accuracy(self) -> float:
        return self.case_correct / self.words if self.words else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "period_f1": self.f1("."),
            "comma_f1": self.f1(","),
            "question_f1": self.f1("?"),
            "exclamation_f1": self.f1("!"),
            "case_accuracy": self.case_accuracy,
            "words": float(self.words),
        }


Predictor = Callable[[Sequence[str]], tuple[list[int], list[int]]]


def rule_baseline(words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Capitalize the first word, end with a period."""
    n = len(words)
    return [1] + [0] * (n - 1), [0] * (n - 1) + [MARKS.index(".")]


def score(predict: Predictor, examples: Iterable) -> Scores:
    """``examples``: objects with ``words``, ``cases``, ``marks`` (``punct_data.Example``)."""
    s = Scores()
    for ex in examples:
        if not ex.words:
            continue
        cases, marks = predict(list(ex.words))
        s.add(ex.words, ex.cases, ex.marks, cases, marks)
    return s
