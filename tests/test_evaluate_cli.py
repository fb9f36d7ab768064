"""``conformer-streamer evaluate`` on a small synthetic held-out corpus: overall and per-voice error rates."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from model.hub import default_model_dir
from model.training import evaluation

MODEL_DIR = default_model_dir()
TEXTS = ["THE BIRCH CANOE SLID ON THE SMOOTH PLANKS", "GLUE THE SHEET TO THE DARK BLUE BACKGROUND"]

pytestmark = [
    pytest.mark.skipif(not shutil.which("flite"), reason="flite not installed"),
    pytest.mark.skipif(not (MODEL_DIR / "model.safetensors").exists(), reason="no embedded model"),
]


def _eval_corpus(home: Path, split: str = "eval") -> None:
    """corpus/<split> in the synthesis layout: two flite voices reading the same two sentences."""
    root = home / "corpus" / split
    (root / "shards").mkdir(parents=True)
    for voice in ("kal16", "rms"):
        (root / "audio" / voice).mkdir(parents=True)
        rows = []
        for i, text in enumerate(TEXTS):
            path = f"audio/{voice}/{split}-flite-{voice}-{i}.wav"
            subprocess.run(["flite", "-voice", voice, "-t", text.lower(), "-o", str(root / path)], check=True)
            rows.append({"path": path, "text": text, "duration": 3.0, "engine": "flite", "voice": voice})
        (root / "shards" / f"{voice}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_evaluate_prints_overall_and_per_voice_rates(tmp_path, monkeypatch, capsys) -> None:
    from streamer import cli

    _eval_corpus(tmp_path)
    monkeypatch.setenv("CONFORMER_STREAMER_HOME", str(tmp_path))
    out_json = tmp_path / "results.json"
    out_dir = tmp_path / "results"
    args = [
        "evaluate",
        "--sets",
        "synthetic",
        "--threads",
        "1",
        "--json",
        str(out_json),
        "--out",
        str(out_dir),
    ]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads(out_json.read_text())["synthetic"]
    assert result["n"] == 4
    assert sorted(result["by_group"]) == ["flite:kal16", "flite:rms"]
    # each voice's rates are those of its own items, and the printed table carries them
    for group, rates in result["by_group"].items():
        rows = [r for r in result["items"] if r["id"].startswith(f"eval-{group.replace(':', '-')}")]
        assert rates["n"] == len(rows) == 2
        expected = evaluation.error_rates([r["ref"] for r in rows], [r["greedy"] for r in rows])
        assert rates["greedy"] == expected
        assert (
            f"{group:<30} {'greedy':<9} {2:>4} {expected['words']:>6} {100 * expected['wer']:>6.1f}%"
            in printed
        )
    overall = evaluation.error_rates(
        [r["ref"] for r in result["items"]], [r["greedy"] for r in result["items"]]
    )
    assert result["rates"]["greedy"] == overall
    # icefall's files: recognitions, errors and a WER summary per set
    recogs = (out_dir / "recogs-synthetic-greedy.txt").read_text().splitlines()
    assert len(recogs) == 2 * result["n"]
    assert recogs[1] == f"{result['items'][0]['id']}:\thyp={result['items'][0]['greedy']}"
    assert (out_dir / "errs-synthetic-greedy.txt").read_text().startswith(f"%WER {100 * overall['wer']:.2f}%")
    summary = (out_dir / "wer-summary-synthetic.txt").read_text().splitlines()
    assert summary[1].split("\t")[:2] == ["greedy", f"{100 * overall['wer']:.2f}"]


def test_dev_set_is_read_augmented_and_a_weight_grid_gives_one_decoder_each(tmp_path, monkeypatch) -> None:
    """--sets dev reads the audio through the training augmentation (the same draw every run), and comma
    lists of --alpha/--beta run one beam decoder per pair over one forward per item."""
    pytest.importorskip("pyctcdecode")
    from streamer import cli

    _eval_corpus(tmp_path, "dev")
    monkeypatch.setenv("CONFORMER_STREAMER_HOME", str(tmp_path))
    items = evaluation.synthetic_items(tmp_path, "dev")
    read = evaluation.augmented_reader()
    assert len(items) == 4
    first = read(items[0])
    assert np.array_equal(first, evaluation.augmented_reader()(items[0]))  # deterministic per item
    plain = evaluation.read_audio(items[0].path)
    assert first.shape != plain.shape or not np.allclose(first, plain, atol=1e-3)  # really augmented

    out_json = tmp_path / "dev.json"
    args = ["evaluate", "--sets", "dev", "--decoder", "beam", "--alpha", "0,2", "--beta", "0.5"]
    assert cli.main([*args, "--lm", "none", "--threads", "1", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())["dev"]
    # one decoder per (alpha, beta); unknown-word score and letter-confidence floor at their defaults
    labels = {"a0/b0.5/u-20/c0.4", "a2/b0.5/u-20/c0.4"}
    assert sorted(result["rates"]) == sorted(labels)
    assert all(set(row) >= labels for row in result["items"])
