"""Which CPU kernels the model's dense layers run on, chosen when the model is loaded.

`nn.Linear` on CPU calls MKL's sgemm. On AMD cores MKL does not take its AVX-512 code paths, while
oneDNN does, and oneDNN runs fastest on a weight reordered once into its blocked layout
(`torch.ops.mkldnn._reorder_linear_weight`) and fed to `torch.ops.mkldnn._linear_pointwise`: the same
two ops `torch.compile` emits for a frozen CPU graph, used here in eager mode. `bench/bench_gemm_peak.py`
measures every route on the machine at hand (figures in the README's roofline table).

`torch.compile(..., freezing)` was not taken as the route: it recompiles for every new (batch, frames)
shape a streaming server meets, needs a C++ compiler at run time, and its prepacking is the same.

`route_linears` swaps the class of every plain `nn.Linear` / `PointwiseConv1d` to a packed variant that
keeps its dense `weight` parameter (state dicts, training, `.to()` and int8 conversion see an ordinary
Linear) and caches the packed copy beside it, rebuilt when the weight changes. The packed kernel only
runs for CPU inference (eval mode, autograd off) in a dtype oneDNN handles natively here; anything else
takes `F.linear`. The cache holds a second copy of the Linear weights (2.4 GB for the large config in
fp32): `linear_route="aten"` turns it off.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from model.conformer import PointwiseConv1d

logger = logging.getLogger(__name__)

LINEAR_ROUTES = ("auto", "onednn", "aten")
_route_choices: dict[tuple[int, int, torch.dtype, int], str] = {}  # measured once per process


def cpu_features() -> dict[str, Any]:
    """What torch sees of this CPU: the ISA level its kernels use and the extensions that pick modes."""

    def probe(name: str) -> bool:
        check = getattr(torch.cpu, name, None)
        return bool(check()) if callable(check) else False

    onednn = torch.backends.mkldnn.is_available()
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "avx512": probe("_is_avx512_supported"),
        "avx512_bf16": probe("_is_avx512_bf16_supported"),
        "amx": probe("_is_amx_tile_supported"),
        "vnni": probe("_is_vnni_supported"),
        "onednn": onednn,
        "onednn_bf16": onednn and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    }


def native_bf16() -> bool:
    """True where bf16 GEMMs run in hardware (avx512_bf16 or AMX): where bf16 beats fp32 on speed."""
    features = cpu_features()
    return features["onednn_bf16"] and (features["avx512_bf16"] or features["amx"])


def onednn_linear_available(dtype: torch.dtype = torch.float32) -> bool:
    """oneDNN is built in and usable, and has a path for `dtype` on this CPU."""
    if not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    if dtype == torch.float32:
        return True
    return dtype == torch.bfloat16 and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class _PackedLinearMixin:
    """Forward through a cached oneDNN-packed weight when that is valid; `F.linear` otherwise."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    training: bool
    _packed: tuple[tuple[Any, ...], torch.Tensor] | None

    def _packed_weight(self, inputs: torch.Tensor) -> torch.Tensor | None:
        weight = self.weight
        if (
            self.training
            or torch.is_grad_enabled()
            or inputs.device.type != "cpu"
            or weight.device.type != "cpu"
            or inputs.dtype != weight.dtype
            or inputs.dim() < 2
            or not onednn_linear_available(weight.dtype)
        ):
            if weight.device.type != "cpu":
                self._packed = None  # moved off the CPU: do not keep a stale copy alive
            return None
        # Inference tensors (made under inference_mode, e.g. by a deepcopy there) have no version counter.
        version = -1 if weight.is_inference() else weight._version
        key = (weight.data_ptr(), version, weight.dtype, tuple(weight.shape))
        cached = getattr(self, "_packed", None)
        if cached is None or cached[0] != key:
            cached = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach()))
            self._packed = cached
        return cached[1]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        packed = self._packed_weight(inputs)
        if packed is None:
            return F.linear(inputs, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(inputs, packed, self.bias, "none", [], "")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)  # type: ignore[attr-defined]
        state["_packed"] = None  # opaque oneDNN tensors can be neither copied nor pickled
        return state


class PackedLinear(_PackedLinearMixin, nn.Linear):
    """`nn.Linear` running on a oneDNN-packed copy of its weight for CPU inference."""


class PackedPointwiseConv1d(_PackedLinearMixin, PointwiseConv1d):
    """`PointwiseConv1d` running on a oneDNN-packed copy of its weight for CPU inference."""


_PACKED_CLASS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: PackedLinear,
    PointwiseConv1d: PackedPointwiseConv1d,
}
_PLAIN_CLASS = {packed: plain for plain, packed in _PACKED_CLASS.items()}


def measure_linear_routes(
    in_features: int, out_features: int, dtype: torch.dtype = torch.float32, rows: int = 256, repeats: int = 5
) -> dict[str, float]:
    """CPU seconds of one (rows x in) @ (in x out) product per available route, best of `repeats`.

    CPU time rather than wall time: on a shared machine wall time mostly measures the neighbours.
    """
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, in_features, generator=generator).to(dtype)
    weight = (torch.randn(out_features, in_features, generator=generator) * in_features**-0.5).to(dtype)
    calls = {"aten": lambda: F.linear(inputs, weight)}
    if onednn_linear_available(dtype):
        packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        calls["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(inputs, packed, None, "none", [], "")
    best = dict.fromkeys(calls, float("inf"))
    with torch.inference_mode():
        for call in calls.values():
            call()  # warm-up: first calls create oneDNN primitives
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.process_time()
                call()
                best[name] = min(best[name], time.process_time() - start)
    return best


def choose_linear_route(model: nn.Module, dtype: torch.dtype = torch.float32) -> str:
    """The faster of oneDNN-packed and aten at the model's widest Linear shape (oneDNN on a 3% tie)."""
    if not onednn_linear_available(dtype):
        return "aten"
    linears = [m for m in model.modules() if type(m) in _PACKED_CLASS or type(m) in _PLAIN_CLASS]
    if not linears:
        return "aten"
    widest = max(linears, key=lambda m: m.in_features * m.out_features)
    key = (widest.in_features, widest.out_features, dtype, torch.get_num_threads())
    if key not in _route_choices:
        seconds = measure_linear_routes(widest.in_features, widest.out_features, dtype)
        route = "onednn" if seconds["onednn"] <= 1.03 * seconds["aten"] else "aten"
        logger.info(
            "dense layers (%d x %d, %s): oneDNN packed %.2f ms, aten %.2f ms -> %s",
            widest.in_features,
            widest.out_features,
            dtype,
            seconds["onednn"] * 1e3,
            seconds["aten"] * 1e3,
            route,
        )
        _route_choices[key] = route
    return _route_choices[key]


def route_linears(model: nn.Module, route: str = "auto") -> str:
    """Put the model's dense layers on `route` ("auto" measures, see `choose_linear_route`); returns it.

    Only plain `nn.Linear` and `PointwiseConv1d` modules are touched (quantized or user-made layers are
    left alone). Weights are packed now so that the first request does not pay for it.
    """
    if route not in LINEAR_ROUTES:
        raise ValueError(f"linear_route must be one of {LINEAR_ROUTES}, got {route!r}")
    float_weights = [p for p in model.parameters() if p.is_floating_point()]
    dtype = float_weights[0].dtype if float_weights else torch.float32
    if route == "auto":
        route = choose_linear_route(model, dtype)
    elif route == "onednn" and not onednn_linear_available(dtype):
        logger.warning("oneDNN has no %s linear path here: dense layers stay on aten", dtype)
        route = "aten"
    unroute_linears(model)
    if route == "onednn":
        with torch.inference_mode():
            for module in model.modules():
                packed_class = _PACKED_CLASS.get(type(module))
                if packed_class is None:
                    continue
                module.__class__ = packed_class
                module._packed = None
                if module.weight.device.type == "cpu" and not module.training:
                    module._packed_weight(module.weight.new_empty(1, module.in_features))
    model.linear_route = route  # type: ignore[assignment]
    return route


def unroute_linears(model: nn.Module) -> None:
    """Back to plain `nn.Linear` / `PointwiseConv1d` classes (drops the packed copies)."""
    for module in model.modules():
        plain_class = _PLAIN_CLASS.get(type(module))
        if plain_class is not None:
            module.__class__ = plain_class
            module.__dict__.pop("_packed", None)
