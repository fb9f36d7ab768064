"""Punctuation and casing of finals: accuracy on held-out text and cost per final, against the rule baseline.

    .venv/bin/python bench/bench_punctuation.py                       # the embedded model
    .venv/bin/python bench/bench_punctuation.py --model DIR --model DIR2 --mobydick 3000
    .venv/bin/python bench/bench_punctuation.py --model DIR --dev-only --cache EXAMPLES.pkl --errors 40

Sets (none of them is training text, see model/pretrained/punct-en/README.md):
- mobydick: Melville's Moby-Dick (r-cran-tokenizers, public domain), a source and author the model never
  saw, cut into finals of 1-3 sentences the way ``model.training.punct_data`` cuts training text;
- harvard: the 720 Harvard sentences (r-cran-stringr), evaluation-only in this project, cut the same way:
  plain modern statements (periods and case only: 22 commas, no questions);
- written: bench/data/punct_heldout.txt, everyday speech written for this check (scored through the
  ``conformer-streamer punctuate`` command, the unit the daemon relies on);
- eval/real: the lower-cased reference transcripts of ../shared/eval/real, with readable references
  in bench/data/eval_real_readable.tsv;
- dev-writ: bench/data/punct_dev_written.txt, a DEVELOPMENT set written in session 14 like the written
  set (names, places, dates, lists, opening clauses): to compare candidates on, not a held-out figure;
- dev-short: bench/data/punct_dev_short.txt, a DEVELOPMENT set written in session 16: 1-8 word commands,
  answers, questions and number strings, so that a model that drops or adds periods on short finals
  (as session 15's cnn-wide did) shows it before any held-out figure.
Printed per set and system (rule baseline = capitalize the first word, end with a period): F1 of
``.``, ``,``, ``?``, case accuracy per word; then milliseconds per 20-word final on one thread
(median of --repeats), as a ratio to the baseline measured in the same run and as a fraction of the 5 ms
budget, and by final length (1-120 words: the daemon's ``format.inline_max_words`` bound holds the event
loop that long). The Must goals (period F1 >= 0.95, comma >= 0.6, question >= 0.8, case >= 0.99 on held-out
text) are checked on mobydick and written (period and case only on harvard); exit 1 if any fails.
"""

from __future__ import annotations

import argparse
import csv
import os
import pickle
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from model.punctuation import DEFAULT_DIR, Punctuator, render, strip_format  # noqa: E402
from model.training import punct_data  # noqa: E402
from model.training.punct_eval import Scores, rule_baseline, score  # noqa: E402

WRITTEN = punct_data.WRITTEN_HELDOUT
# a development set (session 14): written like the held-out set, but there to compare candidates on
WRITTEN_DEV = punct_data.WRITTEN_DEV
# a development set (session 16): short spoken finals (1-8 words), where a period regression shows first
SHORT_DEV = punct_data.SHORT_DEV
REAL_READABLE = ROOT / "bench" / "data" / "eval_real_readable.tsv"
REAL_TSV = ROOT.parent / "shared" / "eval" / "real" / "transcripts.tsv"
BUDGET_MS = 5.0
GOALS = {"period_f1": 0.95, "comma_f1": 0.6, "question_f1": 0.8, "case_accuracy": 0.99}
GOALS_CHECKED = {"mobydick": tuple(GOALS), "harvard": ("period_f1", "case_accuracy"), "written": tuple(GOALS)}


def written_set(path: Path = WRITTEN) -> list[punct_data.Example]:
    return punct_data.labelled_lines(path)


def real_set() -> list[punct_data.Example]:
    """eval/real references as the recognizer would write them, labelled by the readable references."""
    shared = (
        Path(os.environ.get("SHARED_DIR", REAL_TSV.parent.parent.parent))
        / "eval"
        / "real"
        / "transcripts.tsv"
    )
    with shared.open(newline="") as f:
        transcripts = {row["id"]: row["transcript"] for row in csv.DictReader(f, delimiter="\t")}
    with REAL_READABLE.open(newline="") as f:
        readable = {row["id"]: row["readable"] for row in csv.DictReader(f, delimiter="\t")}
    out = []
    for key, text in transcripts.items():
        ex = punct_data.label_sentence(readable[key])
        assert ex is not None and " ".join(ex.words) == text.lower(), (key, ex)
        out.append(ex)
    return out


def dev_examples(cache: Path | None) -> dict[str, list[punct_data.Example]]:
    """The development sets (never held out): the two written here, and with ``cache`` the training
    data's development cut and the talk-like set that ``train-punct`` selects and calibrates on."""
    sets = {"dev-writ": written_set(WRITTEN_DEV), "dev-short": written_set(SHORT_DEV)}
    if cache is not None:
        with cache.open("rb") as f:
            dev = pickle.load(f)[: punct_data.DEV_SIZE]
        sets["dev"] = dev
        sets["talk-dev"] = punct_data.talk_dev_examples(dev)
    return sets


def print_errors(predict, examples: list[punct_data.Example], limit: int) -> None:
    """Reference and output of the first ``limit`` wrong finals (development sets only)."""
    shown = 0
    for ex in examples:
        cases, marks = predict(list(ex.words))
        if shown < limit and (list(cases) != list(ex.cases) or list(marks) != list(ex.marks)):
            print("    REF", " ".join(render(ex.words, ex.cases, ex.marks)))
            print("    HYP", " ".join(render(ex.words, cases, marks)))
            shown += 1


def through_cli(examples: list[punct_data.Example], model: Path) -> Scores:
    """Score ``conformer-streamer punctuate`` itself: lines in, lines out, labels read back."""
    stdin = "".join(" ".join(e.words) + "\n" for e in examples)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "punctuate", "--model", str(model)],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.splitlines()
    assert len(out) == len(examples), "punctuate must write one line per input line"
    s = Scores()
    for ex, line in zip(examples, out, strict=True):
        got = punct_data.label_sentence(line)
        assert got is not None and got.words == ex.words, f"words changed: {line!r}"
        s.add(ex.words, ex.cases, ex.marks, list(got.cases), list(got.marks))
    return s


def ms_per_final(predict, finals: list[list[str]], repeats: int) -> tuple[float, float]:
    """Median CPU time of this thread per final (what one core spends, whatever else the machine runs)
    and the median wall time (which a busy machine inflates with preemption)."""
    cpu, wall = [], []
    for _ in range(repeats):
        for words in finals:
            c, t = time.thread_time(), time.perf_counter()
            predict(words)
            cpu.append(time.thread_time() - c)
            wall.append(time.perf_counter() - t)
    return 1000 * statistics.median(cpu), 1000 * statistics.median(wall)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, action="append", help="model directory (repeatable)")
    p.add_argument("--mobydick", type=int, default=0, help="Moby-Dick finals to score (default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cost-only", action="store_true", help="only the cost per final (no accuracy tables)")
    p.add_argument(
        "--dev-only",
        action="store_true",
        help="score the development sets only (to pick a candidate before looking at held-out figures)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        help="training-utterance pickle (train-punct --cache): adds its development cut and the talk-like set",
    )
    p.add_argument("--errors", type=int, default=0, help="print up to N wrong finals per DEVELOPMENT set")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    models = args.model or [DEFAULT_DIR]

    sets: dict[str, list[punct_data.Example]] = {}
    if not args.dev_only:
        sets["mobydick"] = punct_data.heldout_examples(limit=args.mobydick or None)
        sets["harvard"] = punct_data.heldout_examples(source="harvard")
        sets["written"] = written_set()
        sets["eval/real"] = real_set()
    dev_sets = dev_examples(args.cache)
    sets.update(dev_sets)
    for name, examples in sets.items():
        print(f"{name}: {len(examples)} finals, {sum(len(e.words) for e in examples)} words")

    systems = {"rule baseline": rule_baseline}
    punctuators = {}
    for path in models:
        punctuator = Punctuator.load(path)
        label = f"{path.name} ({(path / 'model.safetensors').stat().st_size / 1e6:.1f} MB)"
        punctuators[label] = (path, punctuator)
        systems[label] = punctuator.predict

    failures = []
    header = f"{'set':10s} {'system':28s} {'period':>7s} {'comma':>7s} {'question':>8s} {'case':>7s}"
    print("\n" + header + "\n" + "-" * len(header))
    for name, examples in {} if args.cost_only else sets.items():
        for label, predict in systems.items():
            s = score(predict, examples).summary()
            print(
                f"{name:10s} {label:28s} {s['period_f1']:7.3f} {s['comma_f1']:7.3f} "
                f"{s['question_f1']:8.3f} {s['case_accuracy']:7.4f}"
            )
            if args.errors and name in dev_sets and label != "rule baseline":
                print_errors(predict, examples, args.errors)
            if label != "rule baseline":
                failures += [
                    f"{label} {name} {k} {s[k]:.3f} < {GOALS[k]}"
                    for k in GOALS_CHECKED.get(name, ())
                    if not s[k] >= GOALS[k]
                ]
        if name == "written":
            for label, (path, _) in punctuators.items():
                s = through_cli(examples, path).summary()
                print(
                    f"{name:10s} {'punctuate CLI, ' + label:28.28s} {s['period_f1']:7.3f} {s['comma_f1']:7.3f} "
                    f"{s['question_f1']:8.3f} {s['case_accuracy']:7.4f}"
                )

    if args.dev_only:  # picking a candidate: accuracy on the development sets only
        return 0
    # cost per 20-word final, one thread
    finals = []
    pool = [w for e in sets["mobydick"][:2000] for w in e.words]
    for i in range(200):
        finals.append(pool[i * 20 : i * 20 + 20])
    base_ms, _ = ms_per_final(rule_baseline, finals, args.repeats)
    print(
        f"\ncost per 20-word final (one thread, median of {len(finals) * args.repeats}; CPU time of the thread):"
    )
    print(f"  rule baseline {base_ms:.4f} ms")
    for label, (_, punctuator) in punctuators.items():
        ms, wall = ms_per_final(punctuator.format_words, finals, args.repeats)
        print(
            f"  {label}: {ms:.3f} ms CPU = {ms / max(base_ms, 1e-6):.0f}x baseline, {ms / BUDGET_MS:.0%} of the "
            f"{BUDGET_MS:g} ms budget (wall {wall:.3f} ms)"
        )
        if ms > BUDGET_MS:
            failures.append(f"{label}: {ms:.2f} ms per final > {BUDGET_MS}")
        # the daemon formats finals of up to format.inline_max_words words on its event loop: what that holds it
        by_length = {
            n: ms_per_final(
                punctuator.format_words, [pool[i * n : i * n + n] for i in range(50)], args.repeats
            )[0]
            for n in (1, 5, 10, 20, 32, 48, 64, 96, 120)
        }
        print(f"  {label}: ms CPU by words " + ", ".join(f"{n}: {ms:.2f}" for n, ms in by_length.items()))
        words = [w for f in finals for w in f][:1000]
        t = time.perf_counter()
        tokens = punctuator.format_words(words)
        print(f"  {label}: 1000 words in one line {1000 * (time.perf_counter() - t):.1f} ms")
        assert [strip_format(x) for x in tokens] == words
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
