"""Linear interpolation of two exported models of the same architecture (a "model soup").

Fine-tuning the embedded model toward real speech trades away some accuracy on synthetic voices. Averaging
the fine-tuned weights with the model it started from (WiSE-FT, Wortsman et al. 2022) keeps most of both
when the two lie in one basin, which models continued from each other do. The mix is picked on the
development set like any other checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_FILE = "model.safetensors"


def average_state(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """``(1 - weight) * first + weight * second`` per floating tensor. Batch-norm step counters keep the first
    model's value (inference never reads them); any other non-float tensor must be equal in both."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], not {weight}")
    if first.keys() != second.keys():
        missing = sorted(first.keys() ^ second.keys())[:5]
        raise ValueError(f"the two models have different tensors, e.g. {missing}")
    out = {}
    for name, a in first.items():
        b = second[name]
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})")
        if a.is_floating_point():
            out[name] = torch.lerp(a.float(), b.float(), weight).to(a.dtype)
        elif torch.equal(a, b) or name.endswith("num_batches_tracked"):
            out[name] = a
        else:
            raise ValueError(f"{name}: non-float tensors differ and cannot be averaged")
    return out


def average_exports(first: Path, second: Path, weight: float, out: Path) -> Path:
    """Write ``out`` as ``first``'s folder (config, vocabulary, LM, card) with the averaged weights."""
    first, second, out = Path(first).expanduser(), Path(second).expanduser(), Path(out).expanduser()
    configs = [json.loads((d / "config.json").read_text()) for d in (first, second)]
    if configs[0] != configs[1]:
        raise ValueError("the two models' config.json differ: not the same architecture")
    state = average_state(load_file(first / WEIGHTS_FILE), load_file(second / WEIGHTS_FILE), weight)
    if out.resolve() != first.resolve():
        shutil.copytree(first, out, dirs_exist_ok=True)
    save_file(state, out / WEIGHTS_FILE, metadata={"format": "pt"})
    return out
