"""Word n-gram language model: interpolated Kneser-Ney, written as ARPA (readable by ``kenlm.Model``).

No external tools: kenlm's ``lmplz`` is not part of the pip package, so the counts, discounts
(``D_n = n1 / (n1 + 2 n2)`` per order) and back-off weights are computed here. Lower orders use
continuation counts (number of distinct left contexts), except for n-grams that start with ``<s>``.
Optional count pruning drops rare n-grams (keeping every context a kept n-gram needs) to keep the file small.
"""

from __future__ import annotations

import gzip
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path


def count_ngrams(sentences: Iterable[str], order: int) -> list[Counter]:
    counts = [Counter() for _ in range(order)]
    for s in sentences:
        words = ["<s>", *s.split(), "</s>"]
        for n in range(1, order + 1):
            c = counts[n - 1]
            for i in range(len(words) - n + 1):
                gram = tuple(words[i : i + n])
                if gram == ("<s>",):
                    continue
                c[gram] += 1
    return counts


def build_kn(sentences: Iterable[str], order: int = 3, prune: tuple[int, ...] = ()) -> dict:
    """Return {n: {gram: (log10 prob, log10 backoff)}} of an interpolated modified-free KN model.

    ``prune[k]`` = minimum raw count kept for order k+2 (e.g. ``(1, 2)`` drops singleton trigrams).
    """
    raw = count_ngrams(sentences, order)
    # adjusted counts: highest order raw; lower orders: continuation counts (raw when starting with <s>)
    adj: list[Counter] = [Counter() for _ in range(order)]
    adj[order - 1] = raw[order - 1]
    for n in range(order - 1, 0, -1):
        cont = Counter()
        for gram in raw[n]:
            cont[gram[1:]] += 1
        for gram, c in raw[n - 1].items():
            adj[n - 1][gram] = c if gram[0] == "<s>" else cont.get(gram, c)
    unpruned = [Counter(counts) for counts in adj]
    for k, minimum in enumerate(prune):
        n = k + 2
        if n <= order and minimum > 1:
            adj[n - 1] = Counter({g: c for g, c in adj[n - 1].items() if c >= minimum})
    # ARPA needs the context of every n-gram as an (n-1)-gram: pruning a lower order keeps the contexts
    # of the higher-order n-grams that survived (top-down, so restored bigrams keep their own contexts too)
    for n in range(order, 2, -1):
        for gram in adj[n - 1]:
            context = gram[:-1]
            if context not in adj[n - 2]:
                adj[n - 2][context] = unpruned[n - 2][context]
    # discounts
    discounts = []
    for n in range(order):
        hist = Counter(c for c in adj[n].values() if c <= 2)
        n1, n2 = hist.get(1, 0), hist.get(2, 0)
        discounts.append(n1 / (n1 + 2 * n2) if n1 and n2 else 0.5)
    # context totals and type counts
    probs: list[dict[tuple, float]] = [dict() for _ in range(order)]
    backoffs: list[dict[tuple, float]] = [dict() for _ in range(order)]
    # unigrams
    vocab = {g[0] for g in adj[0]}
    total = sum(adj[0].values())
    d = discounts[0]
    uniform = 1.0 / (len(vocab) + 1)
    n_types = len(adj[0])
    for g, c in adj[0].items():
        probs[0][g] = max(c - d, 0) / total + d * n_types / total * uniform
    probs[0][("<unk>",)] = d * n_types / total * uniform
    probs[0][("<s>",)] = 0.0
    for n in range(2, order + 1):
        ctx_total: dict[tuple, int] = defaultdict(int)
        ctx_types: dict[tuple, int] = defaultdict(int)
        for g, c in adj[n - 1].items():
            ctx_total[g[:-1]] += c
            ctx_types[g[:-1]] += 1
        d = discounts[n - 1]
        for ctx, tot in ctx_total.items():
            backoffs[n - 2][ctx] = d * ctx_types[ctx] / tot
        for g, c in adj[n - 1].items():
            ctx = g[:-1]
            lower = _lookup(probs, backoffs, g[1:])
            probs[n - 1][g] = max(c - d, 0) / ctx_total[ctx] + backoffs[n - 2][ctx] * lower
    return {"probs": probs, "backoffs": backoffs, "order": order}


def _lookup(probs, backoffs, gram: tuple) -> float:
    """Interpolated probability of gram's last word given its context (recursing on shorter contexts)."""
    n = len(gram)
    p = probs[n - 1].get(gram)
    if p is not None:
        return p
    if n == 1:
        return probs[0][("<unk>",)]
    bow = backoffs[n - 2].get(gram[:-1], 1.0)
    return bow * _lookup(probs, backoffs, gram[1:])


def write_arpa(model: dict, path: str | Path) -> Path:
    """Write the ARPA text; a ``.gz`` path is gzip-compressed (kenlm reads it as is), byte-reproducibly."""
    path = Path(path)
    probs, backoffs, order = model["probs"], model["backoffs"], model["order"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with (
        tmp.open("wb") as sink,
        io.TextIOWrapper(
            gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=sink, mtime=0)
            if path.suffix == ".gz"
            else sink,
            encoding="utf-8",
        ) as f,
    ):
        f.write("\n\\data\\\n")
        for n in range(order):
            f.write(f"ngram {n + 1}={len(probs[n])}\n")
        for n in range(order):
            f.write(f"\n\\{n + 1}-grams:\n")
            for g in sorted(probs[n]):
                p = probs[n][g]
                lp = -99.0 if p <= 0 else math.log10(p)
                line = f"{lp:.6f}\t{' '.join(g)}"
                if n < order - 1:
                    bow = backoffs[n].get(g)
                    if bow is not None and g[-1] != "</s>":
                        line += f"\t{math.log10(bow):.6f}"
                    elif g[-1] != "</s>":
                        line += "\t0.000000"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
    tmp.replace(path)
    return path


def build_arpa(
    sentences: Iterable[str], path: str | Path, order: int = 3, prune: tuple[int, ...] = ()
) -> Path:
    return write_arpa(build_kn(sentences, order, prune), path)
