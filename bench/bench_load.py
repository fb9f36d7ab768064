"""Load / soak benchmark: N real-time websocket streams for M minutes against a real daemon.

    .venv/bin/python bench/bench_load.py                                  # 32 streams x 10 min, embedded model
    .venv/bin/python bench/bench_load.py --streams 8 --minutes 1          # smoke run
    .venv/bin/python bench/bench_load.py --model DIR --streams 16 --minutes 5
    .venv/bin/python bench/bench_load.py --model tiny --streams 8 --minutes 1   # random tiny model (no text)
    .venv/bin/python bench/bench_load.py --url ws://127.0.0.1:2700/v1/stream --pid PID   # existing daemon

Starts ``python -m streamer.cli serve`` on a free 127.0.0.1 port (unless ``--url``), synthesizes a few
English sentences with espeak-ng/flite into a temp dir, and runs ``--streams`` clients, each looping the
sentences (from a different one) with ``--gap-s`` of silence between them, paced in real time with
``--frame-ms`` frames. Clients ramp up over ``--ramp-s``. After ``--minutes`` each client finishes the
utterance it is in, sends ``end`` and must get its remaining finals and ``end`` (close 1000).

Printed:
- streams held: clients connected for the whole run that got their ``end`` and a 1000 close;
- latency p50/p95/p99: time from sending the audio up to an event's ``end`` to receiving that
  ``partial`` (resp. ``final``; finals include the endpointer's silence wait, ``endpoint.min_silence_s``);
- errors (error events by code, client failures), lost finals (utterances sent that no final overlaps);
- server RSS over time (/proc/PID/status VmRSS) and its growth from the end of warm-up to the end;
- the daemon's /metrics snapshot (conformer_* series) just before the clients send ``end``.
Exit status: 0 when every goal held (all streams held, zero lost finals, no error events,
RSS growth <= --max-rss-growth), 1 otherwise. Bounded: the whole run stops by itself after
``minutes + ramp + end timeout + 3 min`` at most.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.loadgen import AudioPlan, ServerProcess, StreamClient, percentile  # noqa: E402

EMBEDDED = ROOT / "model" / "pretrained" / "en-small"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=32, help="concurrent real-time clients (default 32)")
    p.add_argument("--minutes", type=float, default=10.0, help="how long each client streams (default 10)")
    p.add_argument(
        "--model",
        default=None,
        help="model directory for the daemon; 'tiny' = a random tiny model made in the temp dir; "
        "default: model/pretrained/en-small if present, else tiny",
    )
    p.add_argument("--url", default=None, help="use a running daemon at this ws:// URL (127.0.0.1 only)")
    p.add_argument("--pid", type=int, default=None, help="with --url: the daemon's PID, for RSS")
    p.add_argument("--token", default=None, help="bearer token for --url / the started daemon")
    p.add_argument("--frame-ms", type=float, default=100.0, help="audio per websocket frame (default 100)")
    p.add_argument("--gap-s", type=float, default=1.5, help="silence between utterances (default 1.5)")
    p.add_argument(
        "--ramp-s", type=float, default=None, help="spread client starts over this (default min(10, 10%%))"
    )
    p.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="RSS baseline after this (default max(ramp + 40 s, 20%%))",
    )
    p.add_argument("--rss-every-s", type=float, default=5.0, help="RSS sampling period (default 5)")
    p.add_argument("--threads", type=int, default=2, help="daemon --model.threads (default 2)")
    p.add_argument("--end-timeout-s", type=float, default=60.0, help="wait for finals+end after end (60)")
    p.add_argument("--max-rss-growth", type=float, default=5.0, help="goal, percent (default 5)")
    p.add_argument("--deflate", action="store_true", help="offer permessage-deflate (default: off)")
    p.add_argument(
        "--format",
        choices=["raw", "readable", "mixed"],
        default="mixed",
        help="finals the clients ask for; mixed (default): even-numbered clients readable, odd raw, so that "
        "the cost of formatting is measured against raw finals in the same run",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (audio, server log)")
    p.add_argument(
        "server_args", nargs="*", help="extra daemon flags after --, e.g. -- --batching.max_batch 16"
    )
    args = p.parse_args(argv)
    if args.url and not args.url.startswith(("ws://127.0.0.1", "wss://127.0.0.1", "ws://localhost")):
        p.error("--url must point at 127.0.0.1")
    if args.streams < 1 or args.minutes <= 0:
        p.error("--streams >= 1 and --minutes > 0")
    return args


def resolve_model(arg: str | None, tmp: Path) -> tuple[str, str]:
    """(model dir, description)."""
    if arg and arg != "tiny":
        return arg, arg
    if arg is None and (EMBEDDED / "config.json").exists():
        return str(EMBEDDED), f"embedded ({EMBEDDED.relative_to(ROOT)})"
    from streamer.server.testing import make_tiny_model

    path = make_tiny_model(tmp / "tiny-model")
    why = "" if arg == "tiny" else " — embedded model not found"
    return str(path), f"random tiny model{why} (transcripts meaningless)"


async def sample_rss(pid: int | None, every: float, samples: list[tuple[float, int]], t0: float, stop):
    if pid is None:
        return
    while not stop.is_set():
        kib = loadgen.rss_kib(pid)
        if kib is not None:
            samples.append((time.monotonic() - t0, kib))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def fetch_metrics(base_http: str, token: str | None) -> str:
    try:
        status, body = loadgen.http_get(f"{base_http}/metrics", token=token)
        return body if status == 200 else f"# /metrics: HTTP {status}\n"
    except Exception as exc:
        return f"# /metrics unavailable: {exc}\n"


async def run_load(args, url: str, base_http: str, pid: int | None, clips) -> dict:
    duration = args.minutes * 60.0
    ramp = args.ramp_s if args.ramp_s is not None else min(10.0, 0.1 * duration)
    # warm-up: every stream's ring buffer (streaming.buffer_s, 30 s by default) has filled once
    warmup = args.warmup_s if args.warmup_s is not None else max(ramp + 40.0, 0.2 * duration)
    t0 = time.monotonic()
    stop_at = t0 + ramp + duration
    clients = [
        StreamClient(
            url,
            AudioPlan(clips, gap_s=args.gap_s, offset=i),
            i,
            frame_ms=args.frame_ms,
            token=args.token,
            end_timeout_s=args.end_timeout_s,
            compression="deflate" if args.deflate else None,
            text_format=client_format(args.format, i),
        )
        for i in range(args.streams)
    ]
    rss: list[tuple[float, int]] = []
    rss_stop = asyncio.Event()
    rss_task = asyncio.create_task(sample_rss(pid, args.rss_every_s, rss, t0, rss_stop))

    async def start_client(c: StreamClient, delay: float):
        await asyncio.sleep(delay)
        return await c.run(stop_at)

    cpu0 = (loadgen.cpu_seconds(pid) if pid else None, time.process_time())
    tasks = [
        asyncio.create_task(start_client(c, ramp * i / max(1, args.streams))) for i, c in enumerate(clients)
    ]
    progress_every = max(10.0, min(60.0, duration / 10))
    snapshot = ""
    snapshot_taken = False
    last_progress = t0
    cpu: dict = {}
    hard_deadline = stop_at + args.end_timeout_s + 180.0
    while not all(t.done() for t in tasks) and time.monotonic() < hard_deadline:
        now = time.monotonic()
        timeout = progress_every if now < stop_at else 1.0
        if not snapshot_taken:
            timeout = max(0.05, min(timeout, stop_at - 2.0 - now))
        await asyncio.wait(tasks, timeout=timeout)
        now = time.monotonic()
        if not snapshot_taken and now >= stop_at - 2.0:
            snapshot = await asyncio.to_thread(fetch_metrics, base_http, args.token)
            snapshot_taken = True
            server_cpu = loadgen.cpu_seconds(pid) if pid else None
            cpu = {
                "server_cpu_s": None if server_cpu is None or cpu0[0] is None else server_cpu - cpu0[0],
                "client_cpu_s": time.process_time() - cpu0[1],
                "wall_s": now - t0,
            }
        if now < stop_at and now - last_progress >= progress_every - 0.5:
            last_progress = now
            connected = sum(1 for c in clients if c.result.ready and not c.result.failure)
            parts = sum(len(c.result.partial_latency) for c in clients)
            last = rss[-1][1] / 1024 if rss else float("nan")
            print(
                f"  t={now - t0:6.0f}s  streams={connected:3d}/{args.streams}  partials={parts:7d}  "
                f"rss={last:7.1f} MiB",
                flush=True,
            )
    for t in tasks:
        if not t.done():
            t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if not snapshot_taken:
        snapshot = await asyncio.to_thread(fetch_metrics, base_http, args.token)
    rss_stop.set()
    await rss_task
    return {
        "t0": t0,
        "ramp": ramp,
        "warmup": warmup,
        "duration": duration,
        "clients": [c.result for c in clients],
        "rss": rss,
        "cpu": cpu,
        "metrics": snapshot,
    }


def rss_growth(
    rss: list[tuple[float, int]], warmup_end: float, load_end: float
) -> tuple[float, float, float]:
    """(baseline MiB, end MiB, growth %): medians of the samples around the end of warm-up and the end."""
    if not rss:
        return float("nan"), float("nan"), float("nan")
    loaded = [(t, k) for t, k in rss if t <= load_end] or rss
    after = [k for t, k in loaded if t >= warmup_end]
    if len(after) < 2:
        after = [k for _, k in loaded]
    n = max(1, min(3, len(after) // 4))
    base = sorted(after[:n])[n // 2] / 1024
    end = sorted(after[-n:])[n // 2] / 1024
    return base, end, (end - base) / base * 100 if base else float("nan")


def client_format(choice: str, index: int) -> str:
    if choice == "mixed":
        return "readable" if index % 2 == 0 else "raw"
    return choice


def format_cost(args, results: list, metrics: dict[str, float]) -> dict:
    """What readable finals cost: the daemon's own timing of formatting per final (the model, plus the
    thread hop for finals over ``format.inline_max_words``: ``conformer_format_seconds``; p50 / p95 are the
    upper bounds of its histogram buckets) and the final latency of readable vs raw clients of this run."""
    count = loadgen.metric(metrics, "conformer_format_seconds_count")
    total = loadgen.metric(metrics, "conformer_format_seconds_sum")
    within = loadgen.metric(metrics, "conformer_format_seconds_bucket", le="0.005")
    bound = {q: loadgen.histogram_quantile(metrics, "conformer_format_seconds", q / 100) for q in (50, 95)}
    by_format: dict[str, list[float]] = {}
    for r in results:
        by_format.setdefault(client_format(args.format, r.index), []).extend(r.final_latency)
    return {
        "formatted_finals": int(count),
        "format_ms_mean": round(1000 * total / count, 3) if count else None,
        "format_within_5ms_pct": round(100 * within / count, 1) if count else None,
        "format_ms_bucket_bound": {q: 1000 * b if count else None for q, b in bound.items()},
        "final_latency_p50_s": {k: round(percentile(v, 50), 3) for k, v in by_format.items()},
    }


def summarize(
    args, model_desc: str, out: dict, exit_code: int | None, stop_s: float | None
) -> tuple[dict, bool]:
    results = out["clients"]
    held = sum(r.held for r in results)
    sent = sum(r.utterances_sent for r in results)
    lost = sum(r.lost_finals for r in results)
    partial_lat = [x for r in results for x in r.partial_latency]
    final_lat = [x for r in results for x in r.final_latency]
    error_codes = Counter(e.split(":", 1)[0] for r in results for e in r.errors)
    failures = [f"client {r.index}: {r.failure}" for r in results if r.failure]
    load_end = out["ramp"] + out["duration"]
    base, end, growth = rss_growth(out["rss"], out["warmup"], load_end)
    audio_h = sum(r.audio_s for r in results) / 3600
    m = loadgen.parse_metrics(out["metrics"])
    figures = {
        "model": model_desc,
        "streams": args.streams,
        "minutes": args.minutes,
        "streams_held": held,
        "audio_hours": round(audio_h, 3),
        "utterances_sent": sent,
        "finals": sum(r.finals for r in results),
        "lost_finals": lost,
        "partials": len(partial_lat),
        "partial_latency_s": {q: round(percentile(partial_lat, q), 3) for q in (50, 95, 99)},
        "final_latency_s": {q: round(percentile(final_lat, q), 3) for q in (50, 95, 99)},
        "error_events": dict(error_codes),
        "error_messages": dict(Counter(e for r in results for e in r.errors).most_common(10)),
        "client_failures": failures,
        "rss_mib": [(round(t, 1), round(k / 1024, 1)) for t, k in out["rss"]],
        "rss_baseline_mib": round(base, 1),
        "rss_end_mib": round(end, 1),
        "rss_growth_pct": round(growth, 2),
        "server_real_time_factor": m.get("conformer_real_time_factor"),
        "readable_finals": format_cost(args, results, m),
        "server_exit_code": exit_code,
        "server_drain_s": None if stop_s is None else round(stop_s, 2),
    }
    goals = {
        f"all {args.streams} streams held": held == args.streams,
        "zero lost finals": lost == 0 and sent > 0,
        "no error events / client failures": not error_codes and not failures,
        f"RSS growth <= {args.max_rss_growth:g}% after warm-up": not (growth > args.max_rss_growth),
    }
    if exit_code is not None:
        goals["server exits 0 on SIGTERM"] = exit_code == 0
    figures["goals"] = goals

    def row(name: str, value: object) -> None:
        print(f"  {name:<38} {value}")

    def q3(d: dict) -> str:
        return " / ".join(f"{d[q]:.3f}" for q in (50, 95, 99)) + " s"

    print("\n" + "=" * 78)
    print(f"LOAD SUMMARY  {args.streams} streams x {args.minutes:g} min   model: {model_desc}")
    print("=" * 78)
    row("streams held (end + close 1000)", f"{held} / {args.streams}")
    row("audio streamed", f"{audio_h * 60:.1f} min total")
    row("utterances sent / finals received", f"{sent} / {figures['finals']}")
    row("lost finals", lost)
    row("partial latency p50 / p95 / p99", q3(figures["partial_latency_s"]) + f"  (n={len(partial_lat)})")
    row("final latency   p50 / p95 / p99", q3(figures["final_latency_s"]) + f"  (n={len(final_lat)})")
    cost = figures["readable_finals"]
    if cost["formatted_finals"]:
        row(
            "readable finals: formatting per final",
            f"{cost['format_ms_mean']:.2f} ms mean ({cost['format_ms_mean'] / 5:.0%} of the 5 ms budget), "
            f"{cost['format_within_5ms_pct']:.1f}% within 5 ms, n={cost['formatted_finals']}",
        )
        b = cost["format_ms_bucket_bound"]
        row("readable finals: formatting p50 / p95", f"<= {b[50]:g} / <= {b[95]:g} ms (bucket bounds)")
        row(
            "final latency p50 by format",
            "  ".join(f"{k} {v:.3f} s" for k, v in sorted(cost["final_latency_p50_s"].items())),
        )
    row("error events (by code)", dict(error_codes) or "none")
    messages = Counter(e for r in results for e in r.errors)
    for message, count in messages.most_common(5):
        print(f"      {count:4d} x {message[:100]}")
    row("client failures", len(failures))
    for f in failures[:10]:
        print(f"      {f}")
    if out["rss"]:
        row(
            "server RSS after warm-up / at end",
            f"{base:.1f} / {end:.1f} MiB  (warm-up {out['warmup']:.0f} s)",
        )
        row("RSS growth after warm-up", f"{growth:+.2f} %")
    else:
        row("server RSS", "unknown (no PID)")
    row("server real-time factor (compute/audio)", m.get("conformer_real_time_factor", "n/a"))
    cpu = out.get("cpu") or {}
    if cpu.get("wall_s"):
        server_cores = (cpu.get("server_cpu_s") or float("nan")) / cpu["wall_s"]
        client_cores = cpu["client_cpu_s"] / cpu["wall_s"]
        row("CPU used: server / load generator", f"{server_cores:.2f} / {client_cores:.2f} cores (avg)")
        figures["server_cpu_cores"] = round(server_cores, 3)
        figures["client_cpu_cores"] = round(client_cores, 3)
    load = os.getloadavg()
    row("machine load average (1/5/15 min)", " / ".join(f"{x:.1f}" for x in load))
    figures["loadavg"] = load
    if exit_code is not None:
        row("server SIGTERM exit / drain time", f"{exit_code} / {stop_s:.1f} s")
    if out["rss"]:
        print("\n  server RSS over time:")
        step = max(1, len(out["rss"]) // 12)
        picks = out["rss"][::step]
        if picks[-1] is not out["rss"][-1]:
            picks.append(out["rss"][-1])
        for t, k in picks:
            print(f"    t={t:7.1f} s  {k / 1024:8.1f} MiB")
    print("\n  /metrics snapshot (before end; histogram buckets omitted):")
    for line in out["metrics"].splitlines():
        if line.startswith("conformer_") and "_bucket{" not in line:
            print(f"    {line}")
    for q in (0.5, 0.95, 0.99):
        for kind in ("partial", "final"):
            b = loadgen.histogram_quantile(m, "conformer_event_latency_seconds", q, type=kind)
            print(f"    server-side {kind} latency p{round(q * 100)} <= {b} s (bucket bound)")
    print("\n  goals:")
    for name, ok in goals.items():
        print(f"    [{'PASS' if ok else 'FAIL'}] {name}")
    print("=" * 78, flush=True)
    return figures, all(goals.values())


def main(argv=None) -> int:
    args = parse_args(argv)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="bench-load-")
    tmp = Path(tmp_ctx.name)
    server: ServerProcess | None = None
    try:
        print(f"synthesizing speech into {tmp} ...", flush=True)
        clips = loadgen.synthesize_clips(tmp / "audio")
        clip_s = sum(c.size for c in clips) / loadgen.RATE
        print(f"  {len(clips)} utterances, {clip_s:.1f} s of speech", flush=True)
        if args.url:
            url, pid, model_desc = args.url, args.pid, "(existing daemon)"
            base_http = "http://" + url.split("://", 1)[1].split("/", 1)[0]
        else:
            model, model_desc = resolve_model(args.model, tmp)
            extra = ["--model.threads", str(args.threads), *args.server_args]
            if args.token:
                extra += ["--server.token", args.token]
            server = ServerProcess(model, extra=extra, log_path=tmp / "server.log")
            print(f"starting daemon: model {model_desc} ...", flush=True)
            t = time.monotonic()
            server.start()
            print(f"  listening on 127.0.0.1:{server.port} (pid {server.pid}, {time.monotonic() - t:.1f} s)")
            url, pid = f"ws://{server.base}/v1/stream", server.pid
            base_http = f"http://{server.base}"
        print(f"running {args.streams} streams x {args.minutes:g} min against {url}", flush=True)
        out = asyncio.run(run_load(args, url, base_http, pid, clips))
        exit_code = stop_s = None
        if server is not None:
            t = time.monotonic()
            exit_code = server.stop(timeout=60)
            stop_s = time.monotonic() - t
        figures, ok = summarize(args, model_desc, out, exit_code, stop_s)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")
        if server is not None and not ok:
            log = server.log_text().splitlines()
            print("\n  last server log lines:\n    " + "\n    ".join(log[-15:]))
        return 0 if ok else 1
    finally:
        if server is not None:
            server.kill()
        if args.keep:
            print(f"kept {tmp}")
        else:
            tmp_ctx.cleanup()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.nice(0)
    sys.exit(main())
