"""Dense-kernel peak of this CPU per precision: the roof of the README's roofline table.

One (M x K) @ (K x N) product through each route torch offers on the CPU, with a fixed thread count:

- ``fp32 MKL``: ``F.linear`` on plain tensors (what ``nn.Linear`` runs by default);
- ``fp32 oneDNN packed``: ``torch.ops.mkldnn._linear_pointwise`` with a weight reordered once by
  ``torch.ops.mkldnn._reorder_linear_weight`` (what ``model.cpu_fast_path`` routes the model through);
- ``bf16 oneDNN packed``: the same in bfloat16 (only where oneDNN has a bf16 path on this CPU);
- ``bf16 aten``: ``F.linear`` on bfloat16 tensors (whatever torch falls back to);
- ``int8 dynamic (<engine>)``: ``torch.ao.nn.quantized.dynamic.Linear`` (int8 weights per output channel,
  activations quantized per call) under each quantized engine torch was built with.

Two figures per route: GFLOP/s of wall time (best of ``--runs``), and GFLOP/s per CPU-second times the
thread count (``--threads`` x FLOPs / process CPU time, best of ``--runs``): on a machine shared with other
processes the second one is what the cores deliver while they run our code, the first what we got.

    python bench/bench_gemm_peak.py                 # 1024 x 4096 @ 4096 x 4096, 2 threads
    python bench/bench_gemm_peak.py --json peak.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP workers sleep: CPU time stays ours

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.cpu_fast_path import cpu_features


def best_rates(call: Callable[[], object], flops: float, runs: int, threads: int) -> tuple[float, float]:
    """(GFLOP/s by wall time, GFLOP/s per CPU-second x threads), each the best of `runs` after a warm-up."""
    call()
    wall = cpu = float("inf")
    for _ in range(runs):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        call()
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, time.process_time() - start_cpu)
    return flops / wall / 1e9, flops * threads / max(cpu, 1e-9) / 1e9


def routes(m: int, k: int, n: int) -> dict[str, Callable[[], object]]:
    """Name -> zero-argument call computing (m, k) @ (k, n) + bias through that route."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=generator)
    weight = torch.randn(n, k, generator=generator) * k**-0.5
    bias = torch.randn(n, generator=generator)
    calls: dict[str, Callable[[], object]] = {"fp32 MKL": lambda: F.linear(x, weight, bias)}
    if torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        calls["fp32 oneDNN packed"] = lambda: torch.ops.mkldnn._linear_pointwise(
            x, packed, bias, "none", [], ""
        )
    x16, w16, b16 = x.bfloat16(), weight.bfloat16(), bias.bfloat16()
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        packed16 = torch.ops.mkldnn._reorder_linear_weight(w16)
        calls["bf16 oneDNN packed"] = lambda: torch.ops.mkldnn._linear_pointwise(
            x16, packed16, b16, "none", [], ""
        )
    calls["bf16 aten"] = lambda: F.linear(x16, w16, b16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

        previous = torch.backends.quantized.engine
        for engine in ("x86", "fbgemm", "onednn"):
            if engine not in torch.backends.quantized.supported_engines:
                continue
            torch.backends.quantized.engine = engine  # weights are packed for the engine active here
            layer = DynamicInt8Linear(k, n, dtype=torch.qint8)
            layer.set_weight_bias(
                torch.quantize_per_channel(
                    weight, weight.abs().amax(1) / 127, torch.zeros(n, dtype=torch.long), 0, torch.qint8
                ),
                bias,
            )
            calls[f"int8 dynamic ({engine})"] = lambda layer=layer, engine=engine: _with_engine(
                engine, layer, x
            )
        torch.backends.quantized.engine = previous
    return calls


def _with_engine(engine: str, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        return layer(x)
    finally:
        torch.backends.quantized.engine = previous


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="1024,4096,4096", help="M,K,N of the product")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    m, k, n = (int(v) for v in args.shape.split(","))
    torch.set_num_threads(args.threads)
    flops = 2.0 * m * k * n
    features = cpu_features()
    print(f"torch {torch.__version__}, {args.threads} threads, ({m} x {k}) @ ({k} x {n}); CPU: {features}")
    results: dict[str, dict[str, float]] = {}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, call in routes(m, k, n).items():
            wall, per_cpu = best_rates(call, flops, args.runs, args.threads)
            results[name] = {"gflops_wall": wall, "gflops_cpu": per_cpu}
            print(
                f"{name:>24}: {wall:7.1f} GFLOP/s wall, {per_cpu:7.1f} GFLOP/s of CPU time x {args.threads}"
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cpu": features, "shape": [m, k, n], "routes": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
