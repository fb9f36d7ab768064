"""Forward-pass speed of our Wav2Vec2-Conformer vs transformers', and of our int8 dynamic quantization.

Ours is loaded through the public API (`from_pretrained` of a checkpoint transformers wrote), so it
runs on the dense-layer route chosen at load time (`model.cpu_fast_path`). Both get the same random weights in the shape of facebook/wav2vec2-conformer-rel-pos-large-960h-ft
(24 layers, width 1024, 16 heads, FFN 4096, 7 x 512 conv front end, relative positions), run on the same
audio, fp32, with a fixed thread count. Timings interleave the candidates so that load from other
processes hits them alike; after a warm-up, the best and the median of several runs are reported.

    python bench/bench_model.py            # large model, 10 s of audio
    python bench/bench_model.py --quick    # small model, 2 s of audio (a smoke test)
    python bench/bench_model.py --profile  # + where the time goes: with our GEMM/conv time fixed, the
                                           #   ratio any fp32 rewrite of the rest can reach (Amdahl)
    python bench/bench_model.py --trained model/pretrained/en-small   # + int8 vs fp32 transcripts of
                                           #   tests/data/*.wav with a trained model
    python bench/bench_model.py --bf16 --roofline   # + our bf16, and achieved GFLOP/s vs each precision's
                                           #   measured GEMM peak (bench/bench_gemm_peak.py): the README's
                                           #   roofline table
    python bench/bench_model.py --device cuda   # on a GPU: fp32 / fp16 / bf16, ours and transformers',
                                           #   speed-ups and logits drift (issue 2's lower precision)
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP workers sleep: CPU time stays ours

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import Wav2Vec2ConformerConfig, Wav2Vec2ConformerForCTC, quantize_dynamic_int8
from model.quantize import preferred_int8_engine

LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": (512,) * 7,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
}
SMALL = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "conv_dim": (256,) * 7,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
}
COMMON = {"vocab_size": 32, "position_embeddings_type": "relative", "conv_bias": True}


def greedy_transcript(logits: torch.Tensor, blank: int = 0) -> list[int]:
    """Frame-wise arg-max, repeats collapsed, blanks dropped (greedy CTC decoding)."""
    best = logits[0].argmax(dim=-1).tolist()
    return [token for i, token in enumerate(best) if token != blank and (i == 0 or token != best[i - 1])]


def test_audio(seconds: float, sample_rate: int = 16_000) -> torch.Tensor:
    """Deterministic speech-like signal: a few gliding harmonics with amplitude modulation and noise."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 40 * torch.sin(2 * torch.pi * 0.7 * t)
    phase = 2 * torch.pi * torch.cumsum(pitch, 0) / sample_rate
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 * (1 + torch.sin(2 * torch.pi * 3 * t)) ** 2
    audio = voiced * envelope + 0.05 * torch.randn(t.shape, generator=generator)
    return ((audio - audio.mean()) / audio.std())[None]


# Dense-algebra kernels: what the same BLAS/oneDNN calls cost no matter how the model around them is written.
DENSE_OPS = (
    "aten::addmm",
    "aten::mm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::mkldnn_convolution",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_convolution_mode",
    "mkldnn::_linear_pointwise",
    "quantized::linear_dynamic",
)


def dense_share(call: Callable[[], Any], top: int = 0) -> tuple[float, float]:
    """(total seconds, seconds in dense kernels) of one profiled call (self CPU time per op); prints the
    `top` costliest other ops (where a slow path would show)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    dense = sum(e.self_cpu_time_total for e in events if e.key in DENSE_OPS) / 1e6
    rest = sorted((e for e in events if e.key not in DENSE_OPS), key=lambda e: -e.self_cpu_time_total)
    for event in rest[:top]:
        print(
            f"    {event.key:<48} {event.self_cpu_time_total / 1e3:8.1f} ms self "
            f"({event.self_cpu_time_total / 1e6 / total:5.1%}), {event.count} calls"
        )
    return total, dense


def trained_int8_check(model_dir: Path) -> None:
    """Greedy transcripts of the project's test audio with a trained model: fp32 vs dynamic int8."""
    from model.audio import load_audio
    from model.training import decoding, evaluation

    model, vocab = evaluation.load_model(model_dir)
    quantized = quantize_dynamic_int8(model)
    greedy = decoding.GreedyDecoder(vocab)
    root = Path(__file__).resolve().parent.parent / "tests" / "data"
    for wav in sorted(p for p in root.iterdir() if p.suffix in {".wav", ".flac", ".ogg"}):
        audio = load_audio(wav, 16000).astype("float32")
        fp32 = greedy.decode(evaluation.log_probs(model, audio)).text
        int8 = greedy.decode(evaluation.log_probs(quantized, audio)).text
        print(f"{wav.name}: int8 transcript unchanged: {fp32 == int8} | fp32 {fp32!r} | int8 {int8!r}")
    held_out_agreement(model, quantized, greedy)


def held_out_agreement(model: Any, quantized: Any, greedy: Any, count: int = 80) -> None:
    """int8 vs fp32 greedy transcripts over held-out synthetic utterances (if the corpus was made here)."""
    import random

    from model.audio import load_audio
    from model.training import corpus, evaluation

    items = evaluation.synthetic_items(corpus.home())
    if not items:
        print(
            "no held-out corpus (conformer-streamer synthesize): skipping the int8 agreement over many utterances"
        )
        return
    items = random.Random(0).sample(items, min(count, len(items)))
    fp32, int8 = [], []
    for item in items:
        audio = load_audio(item.path, 16000).astype("float32")
        fp32.append(greedy.decode(evaluation.log_probs(model, audio)).text)
        int8.append(greedy.decode(evaluation.log_probs(quantized, audio)).text)
    cer = evaluation.error_rates(fp32, int8)["cer"]
    same = sum(a == b for a, b in zip(fp32, int8, strict=True))
    print(f"{len(items)} held-out utterances: int8 vs fp32 transcript CER {cer:.2%}, identical {same}")


def time_interleaved(
    candidates: dict[str, Callable[[], Any]], runs: int, cpu_samples: dict[str, list[float]] | None = None
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds per call of each candidate over `runs` interleaved rounds, and the warm-up call's result.

    `cpu_samples`, if given, receives the process CPU seconds of each call as well.
    """
    results = {name: call() for name, call in candidates.items()}  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(runs):
        for name, call in candidates.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            samples[name].append(time.perf_counter() - start)
            if cpu_samples is not None:
                cpu_samples.setdefault(name, []).append(time.process_time() - start_cpu)
    return samples, results


def forward_flops(kwargs: dict[str, Any], seconds: float) -> float:
    """FLOPs of one forward of our model (matmuls, convolutions, attention), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = Wav2Vec2ConformerForCTC(Wav2Vec2ConformerConfig(**kwargs)).eval()
        audio = torch.empty(1, int(seconds * 16000))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(audio)
    return float(counter.get_total_flops())


def gemm_peaks(threads: int) -> dict[str, float]:
    """Per precision, the best GEMM rate of the kernels that precision runs on (GFLOP/s of CPU time x
    threads, bench/bench_gemm_peak.py's routes at 1024 x 4096 @ 4096 x 4096)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_gemm_peak import best_rates, routes

    m, k, n = 1024, 4096, 4096
    engine = torch.backends.quantized.engine
    rates = {}
    with torch.inference_mode():
        for name, call in routes(m, k, n).items():
            if name.startswith("int8") and f"({engine})" not in name:
                continue
            rates[name] = best_rates(call, 2.0 * m * k * n, 3, threads)[1]
    bf16 = "bf16 oneDNN packed" if "bf16 oneDNN packed" in rates else "bf16 aten"
    return {
        "fp32": max(rate for name, rate in rates.items() if name.startswith("fp32")),
        "bf16": rates[bf16],
        "int8": rates[f"int8 dynamic ({engine})"],
        **{f"route {name}": rate for name, rate in rates.items()},
    }


def roofline(
    kwargs: dict[str, Any],
    seconds: float,
    threads: int,
    wall: dict[str, float],
    cpu: dict[str, float],
) -> None:
    """Achieved GFLOP/s of each candidate against the GEMM peak of its precision (the README table)."""
    flops = forward_flops(kwargs, seconds)
    peaks = gemm_peaks(threads)
    print(f"forward: {flops / 1e9:.0f} GFLOP; GEMM peaks (GFLOP/s of CPU time x {threads}):")
    for name, rate in peaks.items():
        if name.startswith("route "):
            print(f"  {name[6:]:>24}: {rate:6.1f}")
    print(
        "| candidate | GEMM peak | achieved (CPU time) | of peak | achieved (wall) | vs transformers fp32 |"
    )
    print("|---|---|---|---|---|---|")
    for name in wall:
        precision = next((p for p in ("bf16", "int8") if p in name), "fp32")
        achieved_cpu = flops * threads / cpu[name] / 1e9
        print(
            f"| {name} | {peaks[precision]:.0f} | {achieved_cpu:.0f} | {achieved_cpu / peaks[precision]:.0%} | "
            f"{flops / wall[name] / 1e9:.0f} | {wall['transformers fp32'] / wall[name]:.2f}x |"
        )


def accelerator_bench(kwargs: dict[str, Any], seconds: float, runs: int, device: str, batch: int) -> None:
    """Ours and transformers' in fp32, fp16 and bf16 on ``device``, same weights and audio: time per
    forward (the device synchronized after each), speed-up over transformers fp32 and over our fp32, and
    the drift of the low-precision logits from transformers fp32 (max |diff|, frame arg-max agreement,
    greedy transcript)."""
    import transformers

    dev = torch.device(device)
    reference = transformers.Wav2Vec2ConformerForCTC(transformers.Wav2Vec2ConformerConfig(**kwargs)).eval()
    ours = Wav2Vec2ConformerForCTC(Wav2Vec2ConformerConfig(**kwargs)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    audio = test_audio(seconds).expand(batch, -1).contiguous().to(dev)  # (batch, samples)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else device
    print(
        f"device {name}; config {kwargs['num_hidden_layers']} layers x {kwargs['hidden_size']}, batch {batch} x "
        f"{seconds:g} s audio; torch {torch.__version__}, transformers {transformers.__version__}"
    )

    def synchronized(model: torch.nn.Module, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
        inputs = audio.to(dtype)

        def call() -> torch.Tensor:
            logits = model(inputs).logits
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return logits.float()

        return call

    candidates: dict[str, Callable[[], Any]] = {}
    for dtype, label in ((torch.float32, "fp32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        for owner, model in (("transformers", reference), ("ours", ours)):
            candidates[f"{owner} {label}"] = synchronized(copy.deepcopy(model).to(dev, dtype), dtype)
    with torch.inference_mode():
        timings, logits = time_interleaved(candidates, runs)
    best = {key: min(values) for key, values in timings.items()}
    exact = logits["transformers fp32"]
    exact_text = greedy_transcript(exact)
    for key in candidates:
        drift = (logits[key] - exact).abs().max().item()
        agree = (logits[key].argmax(-1) == exact.argmax(-1)).float().mean().item()
        print(
            f"{key:>18}: best {best[key] * 1000:8.1f} ms, x{best['transformers fp32'] / best[key]:5.2f} vs "
            f"transformers fp32, x{best['ours fp32'] / best[key]:5.2f} vs ours fp32; logits max |diff| "
            f"{drift:.2e}, frame arg-max agreement {agree:.1%}, greedy transcript unchanged "
            f"{greedy_transcript(logits[key]) == exact_text}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small config and 2 s of audio")
    parser.add_argument("--seconds", type=float, default=None, help="audio length (default 10, quick 2)")
    parser.add_argument(
        "--runs", type=int, default=5, help="timed runs per candidate (best and median reported)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also time our model in bfloat16")
    parser.add_argument(
        "--transformers-bf16", action="store_true", help="also time transformers' model in bfloat16"
    )
    parser.add_argument(
        "--int8-all-layers", action="store_true", help="also time int8 without the float edge layers"
    )
    parser.add_argument(
        "--linear-route", default="auto", choices=["auto", "onednn", "aten"], help="our dense-layer kernels"
    )
    parser.add_argument(
        "--roofline",
        action="store_true",
        help="also measure the GEMM peak per precision and print achieved GFLOP/s and fraction of it",
    )
    parser.add_argument("--profile", action="store_true", help="also profile one call of each fp32 model")
    parser.add_argument("--trained", type=Path, default=None, help="a trained model dir for the int8 check")
    parser.add_argument(
        "--device",
        default=None,
        help="cuda, cuda:1 (or cpu): the fp32/fp16/bf16 comparison on that device instead",
    )
    parser.add_argument("--batch", type=int, default=1, help="utterances per forward (--device only)")
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    kwargs = {**COMMON, **(SMALL if args.quick else LARGE)}
    torch.manual_seed(0)
    if args.device is not None:
        accelerator_bench(kwargs, seconds, args.runs, args.device, args.batch)
        return

    import transformers

    torch.set_num_threads(args.threads)

    reference = transformers.Wav2Vec2ConformerForCTC(transformers.Wav2Vec2ConformerConfig(**kwargs)).eval()
    # Ours through the public API: a checkpoint written by transformers, read by from_pretrained (which
    # also puts the dense layers on the fastest CPU route measured here, model.cpu_fast_path).
    checkpoint = tempfile.TemporaryDirectory()
    reference.save_pretrained(checkpoint.name)
    ours = Wav2Vec2ConformerForCTC.from_pretrained(checkpoint.name, linear_route=args.linear_route)
    int8 = quantize_dynamic_int8(ours)
    int8_everywhere = quantize_dynamic_int8(ours, float_edge_layers=0) if args.int8_all_layers else None
    bf16 = (
        Wav2Vec2ConformerForCTC.from_pretrained(
            checkpoint.name, dtype=torch.bfloat16, linear_route=args.linear_route
        )
        if args.bf16
        else None
    )
    reference_bf16 = copy.deepcopy(reference).to(torch.bfloat16) if args.transformers_bf16 else None
    checkpoint.cleanup()
    audio = test_audio(seconds)
    print(
        f"config: {kwargs['num_hidden_layers']} layers x {kwargs['hidden_size']}, {seconds:g} s audio, "
        f"{args.threads} threads, torch {torch.__version__}, transformers {transformers.__version__} "
        f"(attention: {reference.config._attn_implementation}); our dense layers: {ours.linear_route}; "
        f"int8 engine {preferred_int8_engine()} (what quantize_dynamic_int8 packs for)"
    )

    candidates: dict[str, Callable[[], Any]] = {
        "transformers fp32": lambda: reference(audio).logits,
        "ours fp32": lambda: ours(audio).logits,
        "ours int8": lambda: int8(audio).logits,
    }
    if int8_everywhere is not None:
        candidates["ours int8, all layers"] = lambda: int8_everywhere(audio).logits
    bf16_audio = audio.to(torch.bfloat16)
    if bf16 is not None:
        candidates["ours bf16"] = lambda: bf16(bf16_audio).logits.float()
    if reference_bf16 is not None:
        candidates["transformers bf16"] = lambda: reference_bf16(bf16_audio).logits.float()
    cpu_timings: dict[str, list[float]] = {}
    with torch.inference_mode():
        timings, logits = time_interleaved(candidates, args.runs, cpu_timings)
    reference_logits, ours_logits, int8_logits = (
        logits["transformers fp32"],
        logits["ours fp32"],
        logits["ours int8"],
    )

    # On a shared machine the fastest run is the least disturbed one; the median is shown as well.
    best = {name: min(values) for name, values in timings.items()}
    middle = {name: statistics.median(values) for name, values in timings.items()}
    for name in timings:
        print(
            f"{name:>21}: best {best[name] * 1000:7.0f} ms (x{best['transformers fp32'] / best[name]:4.2f}), "
            f"median {middle[name] * 1000:7.0f} ms (x{middle['transformers fp32'] / middle[name]:4.2f}) "
            "vs transformers fp32"
        )
    fp32_diff = (ours_logits - reference_logits).abs().max().item()
    print(
        f"fp32 logits max |diff| vs transformers: {fp32_diff:.2e} "
        f"(relative to max |logit| {fp32_diff / reference_logits.abs().max().item():.1e}; parity bound 1e-4)"
    )
    print(
        f"int8 logits max |diff| vs transformers: {(int8_logits - reference_logits).abs().max().item():.2e}"
    )
    reference_text = greedy_transcript(reference_logits)
    print(
        f"greedy transcript ({len(reference_text)} tokens) unchanged: "
        f"fp32 {greedy_transcript(ours_logits) == reference_text}, int8 {greedy_transcript(int8_logits) == reference_text}"
    )
    agree = int8_logits.argmax(-1) == reference_logits.argmax(-1)
    top2 = reference_logits.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    confident = margin >= margin.median()  # random weights leave many near-ties
    print(
        f"int8 frame arg-max agreement: {agree.float().mean().item():.1%} of all frames, "
        f"{agree[confident].float().mean().item():.1%} of the more confident half"
    )
    if args.profile:
        with torch.inference_mode():
            shares = {}
            for name in ("transformers fp32", "ours fp32"):
                print(f"{name}: costliest ops outside the dense kernels")
                shares[name] = dense_share(candidates[name], top=10)
        for name, (total, dense) in shares.items():
            print(
                f"{name:>18}: profiled {total * 1000:7.0f} ms, dense GEMM/conv kernels {dense * 1000:7.0f} ms "
                f"({dense / total:.0%}), everything else {(total - dense) * 1000:6.0f} ms"
            )
        reference_total = shares["transformers fp32"][0]
        ours_dense = shares["ours fp32"][1]
        print(
            f"ceiling for our fp32 forward with its current dense kernels: x{reference_total / ours_dense:4.2f} "
            "(everything but our GEMMs/convs taking zero time)"
        )
    if args.trained is not None:
        trained_int8_check(args.trained)
    if bf16 is not None:
        bf16_drift = (logits["ours bf16"] - reference_logits).abs().max().item()
        bf16_agree = (logits["ours bf16"].argmax(-1) == ours_logits.argmax(-1)).float().mean().item()
        print(
            f"bf16 logits max |diff| vs transformers: {bf16_drift:.2e}; frame arg-max agreement with our "
            f"fp32 {bf16_agree:.1%}"
        )
    if args.roofline:
        with torch.inference_mode():
            roofline(
                kwargs,
                seconds,
                args.threads,
                {name: min(values) for name, values in timings.items()},
                {name: min(values) for name, values in cpu_timings.items()},
            )


if __name__ == "__main__":
    main()
