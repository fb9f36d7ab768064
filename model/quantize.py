"""Inference-time precision: int8 dynamic quantization on CPU, half precision on CUDA."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from model.conformer import PointwiseConv1d
from model.cpu_fast_path import native_bf16, route_linears, unroute_linears

PRECISIONS = ("float32", "float16", "bfloat16", "int8")
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


def resolve_dtype(name: str, device: torch.device | str = "cpu") -> str:
    """A `--dtype` value -> the float dtype to run: "auto" is bfloat16 on CPUs with bf16 hardware.

    Elsewhere "auto" is float32: on CPUs without avx512_bf16 or AMX, bf16 GEMMs are emulated and slower
    than fp32, and on CUDA the drift of fp16 / bf16 has not been measured yet. float16 needs CUDA.
    """
    if name not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {name!r}")
    device = torch.device(device)
    if name == "auto":
        return "bfloat16" if device.type == "cpu" and native_bf16() else "float32"
    if name == "float16" and device.type != "cuda":
        raise ValueError("float16 inference needs a CUDA device; use bfloat16 or int8 on CPU")
    return name


def _as_plain_linears(model: nn.Module) -> None:
    """Swap `PointwiseConv1d` (a Linear subclass) for `nn.Linear` sharing its weights.

    The quantizer only converts exact `nn.Linear` types; the subclass exists for checkpoint key shapes,
    which no longer matter in an inference-only quantized copy.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PointwiseConv1d):
                linear = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                linear.weight = child.weight
                linear.bias = child.bias
                setattr(parent, name, linear)


def preferred_int8_engine() -> str:
    """oneDNN on CPUs with AMX tiles (its int8 kernels use them; ~10% faster here), else the default."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    if "onednn" in torch.backends.quantized.supported_engines and amx():
        return "onednn"
    return torch.backends.quantized.engine


@contextlib.contextmanager
def _quantized_engine(engine: str) -> Iterator[None]:
    """Weights are packed for the engine active at conversion; the packed kernels keep it afterwards."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def quantize_dynamic_int8(
    model: nn.Module, inplace: bool = False, engine: str | None = None, float_edge_layers: int = 1
) -> nn.Module:
    """Backbone Linear layers with int8 weights and per-batch dynamically quantized activations (CPU).

    Uses the int8 kernels behind `torch.ao.quantization.quantize_dynamic`. PyTorch marks that namespace
    deprecated in favour of torchao, but in torch 2.13 it is still the eager-mode int8 path with fast
    CPU kernels (torchao's needs `torch.compile` to be fast), so we use it and silence the notice.

    Weights get one scale per output channel: per-tensor scales let a few large rows crush the
    resolution of all others. The edges of the network stay float, as usual for int8 networks: the
    feature projection (its rounding error would pass through every Conformer layer), the head's layers
    (CTC `lm_head`, classifiers, x-vector TDNN), whose rounding lands directly on the logits, and the
    first and last `float_edge_layers` Conformer layers when at least one layer between them remains.
    Each of these choices lowered the int8-vs-fp32 transcript drift of the embedded model
    (`bench/bench_model.py --quick --trained`; figures in docs/RESULTS.md, "int8 quantization").
    `engine` defaults to `preferred_int8_engine()`. Where the CPU has VNNI (avx512_vnni / avx_vnni), the
    default "x86" engine's fbgemm kernels use it (`bench/bench_gemm_peak.py` times every engine).
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    float_route = getattr(model, "linear_route", None)
    unroute_linears(model)  # the quantizer converts exact nn.Linear types only
    _as_plain_linears(model)
    backbone_model = getattr(model, "wav2vec2_conformer", model)
    backbone = {id(module) for module in backbone_model.modules()}
    kept_float = [backbone_model.feature_projection]
    layers = list(backbone_model.encoder.layers)
    if float_edge_layers > 0 and len(layers) > 2 * float_edge_layers:
        kept_float += layers[:float_edge_layers] + layers[-float_edge_layers:]
    backbone -= {id(module) for kept in kept_float for module in kept.modules()}
    targets = {
        name for name, module in model.named_modules() if type(module) is nn.Linear and id(module) in backbone
    }
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings(), _quantized_engine(engine or preferred_int8_engine()):
        warnings.filterwarnings("ignore", message=r".*quantiz", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantiz", category=UserWarning)
        torch.ao.quantization.quantize_dynamic(
            model, {name: qconfig for name in targets}, dtype=torch.qint8, inplace=True
        )
    if float_route is not None:
        route_linears(model, float_route)  # the layers left in float keep the loaded model's kernels
    return model


def prepare_for_inference(
    model: nn.Module, precision: str = "float32", device: torch.device | str = "cpu"
) -> nn.Module:
    """Eval-mode model in the requested precision on `device`.

    float16 requires CUDA (CPU half-precision convolutions are slow or missing); int8 is CPU-only.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError("int8 dynamic quantization runs on CPU only")
        return quantize_dynamic_int8(model.to("cpu"))
    if precision == "float16" and device.type != "cuda":
        raise ValueError("float16 inference needs a CUDA device; use bfloat16 or int8 on CPU")
    return model.to(device=device, dtype=getattr(torch, precision)).eval()
