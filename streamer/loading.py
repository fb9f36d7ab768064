"""Load the CTC model to run: one function for the daemon's engine and ``conformer-streamer transcribe``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model import Wav2Vec2ConformerForCTC

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("int8",)


@dataclass(frozen=True)
class LoadedModel:
    model: Wav2Vec2ConformerForCTC  # in eval mode, on its device, in its run dtype
    directory: Path  # where it came from (its tokenizer, processor and LM sit beside it)
    dtype: str  # the float dtype it runs in: "float32" | "bfloat16" | "float16"


def run_dtype(dtype: str, device: str, quantize: str | None) -> str:
    """``dtype`` with "auto" resolved (bf16 on CPUs with bf16 hardware; float32 under int8, whose layers
    quantize float32 activations and whose float edges stay float32)."""
    from model.quantize import resolve_dtype

    if dtype == "auto" and quantize:
        return "float32"
    return resolve_dtype(dtype, device)


def model_directory(dir_or_id: str | Path | None) -> Path:
    """A model directory, a hub id in the local cache, or None for the embedded default model."""
    from model.hub import default_model_dir, resolve_model_dir

    if dir_or_id is None or dir_or_id == "":
        return Path(default_model_dir())
    return Path(resolve_model_dir(dir_or_id))


def load_ctc_model(
    dir_or_id: str | Path | None = None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    quantize: str | None = None,
) -> LoadedModel:
    """The model of ``dir_or_id``, quantized, cast and moved as asked (ValueError for a bad combination).

    On the CPU it is loaded in its run dtype, so the dense layers are packed for it once
    (``model.cpu_fast_path``); under int8 only the layers left in float are packed, after quantizing,
    so no transient packed copy of the rest is made.
    """
    import torch

    from model import Wav2Vec2ConformerForCTC, quantize_dynamic_int8
    from model.cpu_fast_path import route_linears

    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES} or unset, got {quantize!r}")
    on_cpu = torch.device(device).type == "cpu"
    if quantize and not on_cpu:
        raise ValueError("int8 dynamic quantization runs on the CPU only")
    name = run_dtype(dtype, device, quantize)
    directory = model_directory(dir_or_id)
    load_dtype = getattr(torch, name) if on_cpu and not quantize else None
    route = "aten" if quantize else "auto"
    model = Wav2Vec2ConformerForCTC.from_pretrained(directory, dtype=load_dtype, linear_route=route).eval()
    if quantize:
        model = quantize_dynamic_int8(model, inplace=True)
        route_linears(model, "auto")
    model = model.to(device)
    if name != "float32":
        model = model.to(getattr(torch, name))
    log.info("model %s on %s: %s%s", directory.name, device, name, " + int8 dynamic" if quantize else "")
    return LoadedModel(model, directory, name)
