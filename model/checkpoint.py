"""Checkpoint I/O compatible with transformers' Wav2Vec2-Conformer checkpoints, with no network access.

A checkpoint is a directory holding `config.json` and the weights (`model.safetensors`, a sharded
safetensors index, or `pytorch_model.bin`); `model.hub` finds it.
Base-model checkpoints load into heads and vice versa by adding / stripping the `wav2vec2_conformer.`
prefix, exactly as transformers does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model.configuration import Wav2Vec2ConformerConfig
from model.hub import resolve_model_dir

logger = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_NAME = "pytorch_model.bin"
# Stored by old transformers versions although they are derived, not learned.
_DERIVED_KEYS = ("encoder.embed_positions.pe",)

# A Wav2Vec2ConformerPreTrainedModel subclass. Typed as a plain module here so that this module, which the
# model classes call to load themselves, does not import them back; it uses `config`,
# `base_model_prefix` and `_init_weights` of them.
ModelT = TypeVar("ModelT", bound=nn.Module)


# Reading weights ---------------------------------------------------------------------------------------


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """Weights of a checkpoint directory: safetensors first, then the pickle-free `torch.load`."""
    if (directory / SAFETENSORS_NAME).is_file():
        return load_file(directory / SAFETENSORS_NAME)
    if (directory / SAFETENSORS_INDEX_NAME).is_file():
        index = json.loads((directory / SAFETENSORS_INDEX_NAME).read_text())
        state_dict: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state_dict.update(load_file(directory / shard))
        return state_dict
    if (directory / PYTORCH_NAME).is_file():
        return torch.load(directory / PYTORCH_NAME, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no {SAFETENSORS_NAME} or {PYTORCH_NAME} in {directory}")


@dataclass
class LoadReport:
    """What did not line up between a checkpoint and a model."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ignored_head_keys: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = []
        if self.missing:
            lines.append(f"missing (newly initialised): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected (ignored): {', '.join(self.unexpected)}")
        if self.mismatched:
            lines.append(f"shape mismatch (newly initialised): {', '.join(self.mismatched)}")
        return "\n".join(lines) or "all weights matched"


def align_base_prefix(
    state_dict: dict[str, torch.Tensor], model: nn.Module, prefix: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Add or strip `prefix.` so a base checkpoint fits a head and a head checkpoint fits a base model.

    Returns the renamed state dict and the head-only keys dropped when loading into a bare model.
    """
    dotted = prefix + "."
    model_is_head = isinstance(getattr(model, prefix, None), nn.Module)
    checkpoint_is_head = any(key.startswith(dotted) for key in state_dict)
    if model_is_head and not checkpoint_is_head:
        return {dotted + key: value for key, value in state_dict.items()}, []
    if not model_is_head and checkpoint_is_head:
        head_keys = [key for key in state_dict if not key.startswith(dotted)]
        return {
            key[len(dotted) :]: value for key, value in state_dict.items() if key.startswith(dotted)
        }, head_keys
    return state_dict, []


def load_state_dict_into(
    model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = False
) -> LoadReport:
    """Load weights (any key form we understand), initialise what is missing, and report."""
    state_dict, head_keys = align_base_prefix(dict(state_dict), model, model.base_model_prefix)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    report = LoadReport(ignored_head_keys=head_keys)
    # Module hooks rename legacy keys (weight-norm g/v) and reshape conv weights; run the same logic here
    # by probing which keys the model would accept.
    normalized = _normalize_keys(model, state_dict)
    skipped: set[str] = set()  # checkpoint keys not loaded: unexpected, derived or of the wrong shape
    for key, source_key in sorted(normalized.items()):
        if key not in expected:
            skipped.add(source_key)
            if not any(key.endswith(derived) for derived in _DERIVED_KEYS):
                report.unexpected.append(source_key)
        elif state_dict[source_key].shape != expected[key]:
            skipped.add(source_key)
            report.mismatched.append(
                f"{source_key} {tuple(state_dict[source_key].shape)} vs {tuple(expected[key])}"
            )
    loaded_keys = set(normalized)
    report.missing = sorted(key for key in expected if key not in loaded_keys)
    if strict and not report.clean:
        raise RuntimeError(f"checkpoint does not match {type(model).__name__}:\n{report}")
    usable = {key: value for key, value in state_dict.items() if key not in skipped}
    model.load_state_dict(usable, strict=False, assign=True)
    _materialize(model)
    return report


def _normalize_keys(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
    """{key as the model names it: key in the checkpoint}, applying the modules' load-time renames."""
    renamed: dict[str, str] = {}
    probe = {key: torch.empty(0) for key in state_dict}
    # Apply every module's load pre-hooks to a throwaway copy, tracking renames via identity.
    identity = {id(tensor): key for key, tensor in probe.items()}
    for prefix, module in model.named_modules():
        dotted = prefix + "." if prefix else ""
        for hook in module._load_state_dict_pre_hooks.values():
            hook(probe, dotted, {}, True, [], [], [])
    for key, tensor in probe.items():
        renamed[key] = identity.get(id(tensor), key)
    return renamed


def _materialize(model: nn.Module) -> None:
    """Give real storage to tensors the checkpoint did not provide, and initialise them.

    A module whose tensors are all missing gets its full initialisation; a partially loaded module only
    gets zeros for the gaps (e.g. `num_batches_tracked` of a BatchNorm whose statistics were loaded).
    """
    for module in model.modules():
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        meta = [(name, tensor) for name, tensor in tensors if tensor.is_meta]
        if not meta:
            continue
        for name, tensor in meta:
            real = torch.zeros_like(tensor, device="cpu")
            if isinstance(tensor, nn.Parameter):
                module._parameters[name] = nn.Parameter(real, requires_grad=tensor.requires_grad)
            else:
                module._buffers[name] = real
        if len(meta) == len(tensors):
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
            model._init_weights(module)


# Public entry points -------------------------------------------------------------------------------------


def _resolve_dtype(dtype: torch.dtype | str | None, config: Wav2Vec2ConformerConfig) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        dtype = config.extra.get("dtype") or config.extra.get("torch_dtype") or "float32"
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."))
    assert isinstance(dtype, torch.dtype)
    return dtype


def load_model(
    cls: type[ModelT],
    dir_or_id: str | Path,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    strict: bool = False,
    revision: str = "main",
    linear_route: str = "auto",
    **config_overrides: Any,
) -> ModelT:
    """Build `cls` from a checkpoint; returns it in eval mode, float32 unless `dtype` says otherwise.

    On the CPU the dense layers are put on the fastest kernel measured here (`linear_route`, see
    `model.cpu_fast_path`); "aten" keeps plain `nn.Linear` calls.
    """
    directory = resolve_model_dir(dir_or_id, revision)
    config = Wav2Vec2ConformerConfig.from_pretrained(directory, **config_overrides)
    state_dict = read_state_dict(directory)
    with torch.device("meta"):  # no time spent initialising weights that are about to be replaced
        model = cls(config)
    report = load_state_dict_into(model, state_dict, strict=strict)
    level = logging.INFO if report.clean else logging.WARNING
    logger.log(level, "loaded %s from %s: %s", cls.__name__, directory, report)
    if report.ignored_head_keys:
        logger.info("ignored %d head weights not used by %s", len(report.ignored_head_keys), cls.__name__)
    model.load_report = report  # type: ignore[attr-defined]
    model.to(dtype=_resolve_dtype(dtype, config), device=device)
    model.eval()
    if model.device.type == "cpu":
        from model.cpu_fast_path import route_linears

        route_linears(model, linear_route)
    return model


def save_model(model: nn.Module, directory: str | Path) -> None:
    """`config.json` (with architectures and dtype) + `model.safetensors`, loadable by transformers."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.copy()
    config.architectures = [type(model).__name__]
    dtype_name = str(model.dtype).removeprefix("torch.")
    config.extra["dtype"] = dtype_name  # transformers >= 5 reads "dtype", older versions "torch_dtype"
    config.extra["torch_dtype"] = dtype_name
    config.save_pretrained(directory)
    state_dict = {key: tensor.detach().contiguous() for key, tensor in model.state_dict().items()}
    save_file(state_dict, directory / SAFETENSORS_NAME, metadata={"format": "pt"})
