"""WER/CER of a CTC model on the evaluation sets.

Sets:
  synthetic — held-out voices (festival cmu_us_slt_arctic_hts, flite rms) reading held-out text
              (``$HOME_DIR/corpus/eval``, made by ``conformer-streamer synthesize --split eval``)
  real      — the human recordings in /work/shared/eval/real (report only: never trained or tuned on)
  dev       — training voices reading development text, with the training augmentation drawn per item
              from a fixed seed (``synthesize --split dev``), plus the real prompts held back from
              training (``real_speech.py``, read as recorded): the set to pick checkpoints and tune
              decoding on
"""

from __future__ import annotations

import csv
import json
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.feature_extraction import normalize_waveform
from model.training.text import join_split_compounds

REAL_DIR = Path("/work/shared/eval/real")


@dataclass
class Item:
    id: str
    path: str
    text: str
    group: str = ""  # the voice ("engine:voice") of a synthetic item, the source of a real one


def synthetic_items(home: Path, split: str = "eval") -> list[Item]:
    root = home / "corpus" / split
    items = []
    for shard in sorted((root / "shards").glob("*.jsonl")):
        for line in shard.read_text().splitlines():
            r = json.loads(line)
            # espeak variants are drawn per utterance from hundreds: one group, as in the training recipe
            voice = "mix" if r.get("engine") == "espeak" else r.get("voice")
            group = f"{r['engine']}:{voice}" if "engine" in r else ""
            items.append(Item(Path(r["path"]).stem, str(root / r["path"]), r["text"], group))
    return items


def dev_items(home: Path) -> list[Item]:
    """The development set: synthetic development items, then the held-back real prompts (group
    ``real:<speaker>``)."""
    from model.training.real_speech import read_real_speech, split_real

    _, real_dev = split_real(read_real_speech())
    return synthetic_items(home, "dev") + [Item(Path(u.path).stem, u.path, u.text, u.voice) for u in real_dev]


def real_items(directory: Path = REAL_DIR) -> list[Item]:
    tsv = directory / "transcripts.tsv"
    if not tsv.exists():
        return []
    with tsv.open(newline="") as f:
        return [
            Item(r["id"], str(directory / r["path"]), r["transcript"], r.get("set", ""))
            for r in csv.DictReader(f, delimiter="\t")
        ]


def load_model(model_dir: str | Path | None):
    """Our Wav2Vec2ConformerForCTC + vocab from a HF-layout directory (default: the embedded model)."""
    from model import Wav2Vec2ConformerForCTC, default_model_dir

    model_dir = default_model_dir() if model_dir is None else Path(model_dir)
    model = Wav2Vec2ConformerForCTC.from_pretrained(model_dir)
    model.eval()
    vocab = json.loads((model_dir / "vocab.json").read_text())
    return model, vocab


def read_audio(path: str) -> np.ndarray:
    from model.audio import load_audio

    return load_audio(path, 16000).astype(np.float32)


@torch.no_grad()
def log_probs(model, audio: np.ndarray) -> np.ndarray:
    x = normalize_waveform(audio)
    logits = model(torch.from_numpy(x)[None]).logits[0]
    return torch.log_softmax(logits.float(), -1).numpy()


def edit_distance(a: list, b: list) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Corpus-level WER and CER (errors summed over utterances / reference length).

    Both sides are scored in today's spelling of the sources' archaic splits ("TO DAY" = "TODAY", see
    `text.join_split_compounds`): the evaluation texts keep the sources' form, while the model and its LM
    learn the joined one, and the two are the same words.
    """
    refs = [join_split_compounds(r) for r in refs]
    hyps = [join_split_compounds(h) for h in hyps]
    we = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True))
    ce = sum(edit_distance(list(r), list(h)) for r, h in zip(refs, hyps, strict=True))
    return {
        "wer": we / max(1, sum(len(r.split()) for r in refs)),
        "cer": ce / max(1, sum(len(r) for r in refs)),
        "words": sum(len(r.split()) for r in refs),
    }


def align_words(ref: list[str], hyp: list[str]) -> list[tuple[str | None, str | None]]:
    """A minimum-edit alignment as (reference word, hypothesis word) pairs; None on the side that has no
    word (a deletion or an insertion)."""
    rows, cols = len(ref) + 1, len(hyp) + 1
    cost = [[0] * cols for _ in range(rows)]  # cost[i][j]: edits between ref[:i] and hyp[:j]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i][j] = min(
                cost[i - 1][j] + 1, cost[i][j - 1] + 1, cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1])
            )
    pairs: list[tuple[str | None, str | None]] = []
    i, j = len(ref), len(hyp)
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((ref[i - 1], None))
            i -= 1
        else:
            pairs.append((None, hyp[j - 1]))
            j -= 1
    return pairs[::-1]


def write_results(directory: Path, set_name: str, result: dict) -> list[Path]:
    """icefall's three files per set and decoder: ``recogs-SET-DECODER.txt`` (reference and recognition
    per utterance), ``errs-SET-DECODER.txt`` (the word errors, per utterance and counted by word) and
    ``wer-summary-SET.txt`` (WER/CER per decoder). ``result`` is `evaluate`'s. Returns the files."""
    directory.mkdir(parents=True, exist_ok=True)
    decoders = list(result["rates"])
    written = []
    for decoder in decoders:
        tag = re.sub(r"[^A-Za-z0-9.=-]+", "_", decoder)
        recogs = directory / f"recogs-{set_name}-{tag}.txt"
        recogs.write_text(
            "".join(
                f"{row['id']}:\tref={row['ref']}\n{row['id']}:\thyp={row[decoder]}\n"
                for row in result["items"]
            )
        )
        errors: dict[str, int] = {}
        lines = []
        for row in result["items"]:
            ref = join_split_compounds(row["ref"]).split()
            hyp = join_split_compounds(row[decoder]).split()
            pairs = align_words(ref, hyp)
            for r, h in pairs:
                if r != h:
                    key = f"{r or '*'} -> {h or '*'}"
                    errors[key] = errors.get(key, 0) + 1
            shown = " ".join(r if r == h else f"({r or '*'}->{h or '*'})" for r, h in pairs)
            lines.append(f"{row['id']}:\t{shown}\n")
        rates = result["rates"][decoder]
        counts = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
        errs = directory / f"errs-{set_name}-{tag}.txt"
        errs.write_text(
            f"%WER {100 * rates['wer']:.2f}% over {rates['words']} reference words\n\n"
            "PER UTTERANCE ((REF->HYP) is an error, * no word):\n"
            + "".join(lines)
            + "\nERRORS BY COUNT:\n"
            + "".join(f"{n}\t{key}\n" for key, n in counts)
        )
        written += [recogs, errs]
    summary = directory / f"wer-summary-{set_name}.txt"
    summary.write_text(
        "decoder\tWER\tCER\twords\tutterances\n"
        + "".join(
            f"{d}\t{100 * result['rates'][d]['wer']:.2f}\t{100 * result['rates'][d]['cer']:.2f}\t"
            f"{result['rates'][d]['words']}\t{result['n']}\n"
            for d in decoders
        )
    )
    return [*written, summary]


def augmented_reader(seed: int = 0) -> Callable[[Item], np.ndarray]:
    """Read an item's audio and apply the training augmentation, drawn from (seed, item id): the same
    audio every run. Real recordings (group ``real:...``) are read as they are."""
    from model.training.augment import augment

    def read(item: Item) -> np.ndarray:
        if item.group.startswith("real:"):
            return read_audio(item.path)
        return augment(read_audio(item.path), np.random.default_rng([seed, zlib.crc32(item.id.encode())]))

    return read


def evaluate(
    model,
    vocab: dict[str, int],
    items: list[Item],
    decoders: dict[str, object],
    reader: Callable[[Item], np.ndarray] | None = None,
) -> dict:
    """Run the model once per item and every decoder on its output (audio from ``reader``, default: the
    file as it is)."""
    hyps: dict[str, list[str]] = {name: [] for name in decoders}
    audio_s, model_s = 0.0, 0.0
    per_item = []
    for it in items:
        audio = reader(it) if reader is not None else read_audio(it.path)
        t = time.perf_counter()
        lp = log_probs(model, audio)
        model_s += time.perf_counter() - t
        audio_s += len(audio) / 16000
        row = {"id": it.id, "ref": it.text}
        for name, dec in decoders.items():
            h = dec.decode(lp).text
            hyps[name].append(h)
            row[name] = h
        per_item.append(row)
    refs = [it.text for it in items]
    groups = sorted({it.group for it in items if it.group})
    by_group = {}
    for g in groups if len(groups) > 1 else []:
        keep = [i for i, it in enumerate(items) if it.group == g]
        by_group[g] = {
            name: error_rates([refs[i] for i in keep], [h[i] for i in keep]) for name, h in hyps.items()
        }
        by_group[g]["n"] = len(keep)
    return {
        "n": len(items),
        "audio_s": audio_s,
        "rtf": model_s / max(audio_s, 1e-9),
        "rates": {name: error_rates(refs, h) for name, h in hyps.items()},
        "by_group": by_group,  # {group: {decoder: rates, "n": items}} when the set has several groups
        "items": per_item,
    }
