"""Where generated data lives, and the text lists that feed synthesis.

Layout under ``$CONFORMER_STREAMER_HOME`` (default ``~/.cache/conformer-streamer``)::

    text/train.txt, text/eval.txt   normalized utterance texts (one per line, "source<TAB>text")
    text/dev.txt                    development text (tuning decoding), disjoint from both
    corpus/train/                   audio/<engine>-<voice>/*.flac, shards/*.jsonl, manifest.jsonl
    corpus/eval/                    held-out voices reading held-out text
    corpus/dev/                     training voices reading the development text
    runs/<name>/                    checkpoints and logs of training runs
    logs/                           background job logs
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from model.training import text as textmod


def home() -> Path:
    return Path(os.environ.get("CONFORMER_STREAMER_HOME", Path.home() / ".cache" / "conformer-streamer"))


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{s}\t{t}\n" for s, t in rows))
    tmp.replace(path)


def _read(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t", 1)) for line in path.read_text().splitlines() if "\t" in line]


def prepare_text(
    root: Path | None = None, n_eval: int = 200, seed: int = 0, force: bool = False
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Build (or load) the training and synthetic-evaluation text lists.

    Evaluation text: 100 Harvard sentences (seeded sample) + 100 held-out corpus utterances, all absent
    from the training list. Training text never contains an evaluation sentence (real or synthetic).
    """
    root = root or home()
    train_path, eval_path = root / "text" / "train.txt", root / "text" / "eval.txt"
    if train_path.exists() and eval_path.exists() and not force:
        return _read(train_path), _read(eval_path)
    utts, stats = textmod.build_utterances()
    train, held = textmod.split_train_eval(utts)
    rng = random.Random(seed)
    harvard = [textmod.normalize(s) for s in textmod.harvard_sentences()]
    n_h = n_eval // 2
    eval_rows = [("harvard", s) for s in rng.sample(harvard, n_h)]
    held_ok = [u for u in held if 6 <= len(u.text.split()) <= 30]
    eval_rows += [(u.source, u.text) for u in rng.sample(held_ok, min(n_eval - n_h, len(held_ok)))]
    eval_texts = {t for _, t in eval_rows}
    guard = textmod.EvalFilter(eval_texts)
    train_rows = [
        (u.source, u.text) for u in train if u.text not in eval_texts and not guard.overlaps(u.text)
    ]
    _write(train_path, train_rows)
    _write(eval_path, eval_rows)
    (root / "text" / "stats.txt").write_text(f"{stats}\ntrain={len(train_rows)} eval={len(eval_rows)}\n")
    return train_rows, eval_rows


def prepare_dev_text(
    root: Path | None = None, n_dev: int = 120, seed: int = 1, force: bool = False
) -> list[tuple[str, str]]:
    """Development text for tuning decoding (the LM weight) without touching the evaluation sets.

    Half Harvard sentences the evaluation sets do not use, half held-out corpus utterances they do not
    use: text that is neither in the training text (so not in the word LM) nor in the synthetic or the
    real evaluation set.
    """
    root = root or home()
    path = root / "text" / "dev.txt"
    if path.exists() and not force:
        return _read(path)
    _, eval_rows = prepare_text(root)
    used = {t for _, t in eval_rows} | {textmod.normalize(t) for t in textmod.real_eval_transcripts()}
    rng = random.Random(seed)
    harvard = [
        s for s in dict.fromkeys(textmod.normalize(s) for s in textmod.harvard_sentences()) if s not in used
    ]
    utts, _ = textmod.build_utterances()
    _, held = textmod.split_train_eval(utts)
    held_ok = [u for u in held if 6 <= len(u.text.split()) <= 30 and u.text not in used]
    n_h = n_dev // 2
    rows = [("harvard", s) for s in rng.sample(harvard, min(n_h, len(harvard)))]
    rows += [(u.source, u.text) for u in rng.sample(held_ok, min(n_dev - n_h, len(held_ok)))]
    _write(path, rows)
    return rows
