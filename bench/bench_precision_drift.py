"""Transcript drift of each CPU precision mode against float32, with a trained model.

For every mode (bf16 weights and activations; dynamic int8 with float edge layers, as the engine runs
it) the greedy transcripts of the same clips are compared with the float32 ones: CER between the two
transcripts (fp32 as the reference), how many are identical, and each mode's own CER against the true
transcripts where the clips have them.

Clip sets: the real recordings of ``../shared/eval/real`` (evaluation only), ``tests/data``, and a sample
of the held-out synthetic set when ``conformer-streamer synthesize`` has made one on this machine.

    python bench/bench_precision_drift.py                       # the embedded model
    python bench/bench_precision_drift.py --model DIR --synthetic 80
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP workers would bill the neighbours' time

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import Wav2Vec2ConformerForCTC, default_model_dir, quantize_dynamic_int8
from model.audio import load_audio
from model.feature_extraction import normalize_waveform
from model.training import corpus, decoding, evaluation

ROOT = Path(__file__).resolve().parent.parent


def clip_sets(synthetic: int) -> dict[str, list[tuple[str, str]]]:
    """Set name -> [(audio path, true transcript or "")]."""
    sets: dict[str, list[tuple[str, str]]] = {}
    real = evaluation.real_items()
    if real:
        sets["eval/real"] = [(item.path, item.text) for item in real]
    data = ROOT / "tests" / "data"
    sets["tests/data"] = [
        (str(p), p.with_suffix(".txt").read_text().strip().upper() if p.with_suffix(".txt").is_file() else "")
        for p in sorted(data.iterdir())
        if p.suffix in {".wav", ".flac", ".ogg"}
    ]
    held_out = evaluation.synthetic_items(corpus.home())
    if held_out and synthetic > 0:
        picked = random.Random(0).sample(held_out, min(synthetic, len(held_out)))
        sets["held-out synthetic"] = [(item.path, item.text) for item in picked]
    return sets


def transcripts(model: torch.nn.Module, greedy, clips: list[tuple[str, str]]) -> tuple[list[str], float]:
    """Greedy transcripts of `clips` and the CPU seconds the forwards took."""
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    texts, cpu = [], 0.0
    with torch.inference_mode():
        for path, _ in clips:
            audio = load_audio(path, 16000).astype(np.float32)
            x = torch.from_numpy(normalize_waveform(audio))[None].to(dtype)
            start = time.process_time()
            logits = model(x).logits[0]
            cpu += time.process_time() - start
            texts.append(greedy.decode(torch.log_softmax(logits.float(), -1).numpy()).text)
    return texts, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: embedded)")
    parser.add_argument("--synthetic", type=int, default=80, help="held-out synthetic clips to sample")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model_dir = args.model or Path(default_model_dir())
    fp32 = Wav2Vec2ConformerForCTC.from_pretrained(model_dir)
    modes = {
        "float32": fp32,
        "bfloat16": Wav2Vec2ConformerForCTC.from_pretrained(model_dir, dtype=torch.bfloat16),
        "int8": quantize_dynamic_int8(fp32),
    }
    greedy = decoding.GreedyDecoder(json.loads((model_dir / "vocab.json").read_text()))
    print(f"model {model_dir.name}; dense layers {fp32.linear_route}; torch {torch.__version__}")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, clips in clip_sets(args.synthetic).items():
        texts = {mode: transcripts(model, greedy, clips) for mode, model in modes.items()}
        truth = [text for _, text in clips]
        reference = texts["float32"][0]
        results[set_name] = {}
        for mode, (hyps, cpu) in texts.items():
            row = {
                "cer_vs_fp32": evaluation.error_rates(reference, hyps)["cer"],
                "identical": sum(a == b for a, b in zip(reference, hyps, strict=True)),
                "clips": len(clips),
                "cpu_s": cpu,
            }
            if all(truth):
                row["cer_vs_truth"] = evaluation.error_rates(truth, hyps)["cer"]
                row["wer_vs_truth"] = evaluation.error_rates(truth, hyps)["wer"]
            results[set_name][mode] = row
            against_truth = (
                f", vs truth CER {row['cer_vs_truth']:.2%} WER {row['wer_vs_truth']:.2%}"
                if all(truth)
                else ""
            )
            print(
                f"{set_name:>18} {mode:>8}: vs fp32 CER {row['cer_vs_fp32']:.2%}, identical "
                f"{row['identical']}/{len(clips)}{against_truth}; forwards {cpu:.1f} CPU s"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
