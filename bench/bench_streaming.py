"""Streaming benchmark: compute vs offline, agreement with offline, partial latency, concurrent streams.

    .venv/bin/python bench/bench_streaming.py                      # embedded model, 2 CPU threads
    .venv/bin/python bench/bench_streaming.py --model DIR           # another checkpoint
    .venv/bin/python bench/bench_streaming.py --large --quantize int8   # random 24x1024 rel-pos model
    .venv/bin/python bench/bench_streaming.py --device cuda --dtype bfloat16

Figures:
- compute ratio: model forward seconds when streaming the test audio (sync path, batched windows) /
  seconds of one offline forward over the whole audio;
- CER/WER of the streamed finals against the offline transcript of the same audio
  (``RecognitionEngine.transcribe``: 15 s windows past 15 s, as ``conformer-streamer transcribe``);
- partial latency p50/p95: for every 100 ms packet, time from ``accept`` of the packet to the first
  Partial whose ``end`` covers it (real-time feeding, inference worker running);
- concurrency: N real-time streams (staggered 100 ms packets) for ``--stream-seconds``; the most N whose
  p95 latency <= ``--p95-limit`` (1 s) with no overload.
Test audio: sentences synthesized with flite (or espeak-ng), joined with pauses (``--seconds``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# CPU-time figures: idle OpenMP workers must sleep, not spin (spinning bills CPU time to the benchmark
# whenever the shared machine is busy).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SENTENCES = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "she sells sea shells by the sea shore every summer morning",
    "a journey of a thousand miles begins with a single step",
    "the weather today is cold and windy with a chance of rain in the evening",
    "please remember to bring your notebook and a pencil to the meeting",
    "he walked slowly down the long road thinking about his old friends",
    "the children played in the garden until the sun went down",
    "we need to buy bread milk eggs and some fresh vegetables",
    "my brother works at the hospital and comes home very late",
    "the train to the city leaves at seven o'clock in the morning",
    "they decided to paint the kitchen a bright shade of yellow",
    "it was the best of times it was the worst of times",
    "the little house stood alone at the edge of the dark forest",
    "music filled the room as the band began to play an old song",
    "she opened the letter and read it twice before she smiled",
    "the doctor told him to rest for a few days and drink plenty of water",
    "our neighbours have a large dog that barks at every passing car",
    "after dinner we sat by the fire and told stories until midnight",
    "the library closes early on sundays so come back tomorrow",
    "he found an old map hidden under the floor of the attic",
    "the market was crowded with people buying fruit and flowers",
    "she wrote a long letter to her mother about the new school",
    "the captain ordered the men to raise the sails and leave the harbour",
    "a cold wind blew across the hills and the sky turned grey",
]


def synthesize_speech(
    seconds: float = 60.0, seed: int = 0, engine: str | None = None, voices: list[str] | None = None
) -> tuple[np.ndarray, str]:
    """(16 kHz float32 audio of at least ``seconds``, its upper-case text): TTS sentences, 0.3-0.9 s pauses."""
    from model.audio import load_audio

    engine = engine or ("flite" if shutil.which("flite") else "espeak-ng")
    if not shutil.which(engine):
        raise RuntimeError("no speech synthesizer: install flite or espeak-ng")
    rng = np.random.default_rng(seed)
    # One voice per sentence in turn unless told otherwise: a stream that changes speaker every sentence.
    voices = voices or (["kal16", "awb", "slt", "rms"] if engine == "flite" else ["en-us", "en"])
    parts: list[np.ndarray] = []
    texts: list[str] = []
    total = 0
    i = 0
    with tempfile.TemporaryDirectory() as tmp:
        while total < seconds * 16000:
            text = SENTENCES[(seed + i) % len(SENTENCES)]
            voice = voices[i % len(voices)]
            wav = Path(tmp) / f"{i}.wav"
            if engine == "flite":
                cmd = ["flite", "-voice", voice, "-t", text, "-o", str(wav)]
            else:
                cmd = ["espeak-ng", "-v", voice, "-s", "155", "-w", str(wav), text]
            subprocess.run(cmd, check=True, capture_output=True)
            speech = load_audio(wav)
            pause = int(rng.uniform(0.3, 0.9) * 16000)
            noise = (rng.standard_normal(pause) * 3e-4).astype(np.float32)
            parts += [speech * np.float32(rng.uniform(0.5, 1.0)), noise]
            texts.append(text)
            total += len(speech) + pause
            i += 1
    # The transcript in the model's vocabulary (upper case), so that error rates compare like with like.
    return np.concatenate(parts).astype(np.float32), " ".join(texts).upper()


def voice_list(text: str) -> list[str]:
    """``--voices kal16,rms`` -> ["kal16", "rms"] (argparse type shared by the streaming benches)."""
    return [voice.strip() for voice in text.split(",") if voice.strip()]


def error_rates(hypothesis: str, reference: str) -> tuple[float, float]:
    import jiwer

    if not reference:
        return (0.0 if not hypothesis else 1.0), (0.0 if not hypothesis else 1.0)
    return float(jiwer.cer(reference, hypothesis)), float(jiwer.wer(reference, hypothesis))


def make_large_model(directory: Path) -> Path:
    """Random 24-layer, 1024-hidden, 16-head relative-position Wav2Vec2-Conformer in HF layout."""
    import torch

    from model import Wav2Vec2ConformerConfig, Wav2Vec2ConformerForCTC

    vocab = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]
    config = Wav2Vec2ConformerConfig(
        vocab_size=len(vocab),
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        position_embeddings_type="relative",
        conv_bias=True,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    Wav2Vec2ConformerForCTC(config).eval().save_pretrained(directory)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"pad_token": "<pad>", "word_delimiter_token": "|"})
    )
    return directory


def build_settings(args: argparse.Namespace, model_dir: str | None):
    from streamer.config import Settings

    s = Settings()
    s.model.path = model_dir
    s.model.device = args.device
    s.model.dtype = args.dtype
    s.model.quantize = args.quantize
    s.model.threads = args.threads
    for name in ("left_context_s", "chunk_s", "lookahead_s", "normalization"):
        value = getattr(args, name)
        if value is not None:
            setattr(s.streaming, name, value)
    if args.max_batch:
        s.batching.max_batch = args.max_batch
    return s


def offline_seconds(engine, audio: np.ndarray, repeats: int = 3) -> float:
    """CPU seconds (all threads of this process) of one offline forward; min over repeats.

    CPU time rather than wall time: the machine is shared, and wall time mostly measures the neighbours.
    """
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        engine.log_probs(audio)
        best = min(best, time.process_time() - t0)
    return best


def streaming_run(engine, audio: np.ndarray, chunk_samples: int = 1600) -> tuple[float, str, list]:
    """CPU seconds to stream ``audio`` (everything: decoding, windows, model, merge), text, finals."""
    t0 = time.process_time()
    finals = engine.transcribe_stream(audio, chunk_samples)
    return time.process_time() - t0, " ".join(f.text for f in finals if f.text), finals


def realtime_trial(engine, audio: np.ndarray, n_streams: int, seconds: float, packet_s: float = 0.1) -> dict:
    """N real-time streams with staggered packets; latency of every packet to its first covering Partial."""
    packet = int(packet_s * 16000)
    n_packets = int(seconds / packet_s)
    sent: list[list[float]] = [[] for _ in range(n_streams)]
    first_cover: list[list[float]] = [[float("nan")] * n_packets for _ in range(n_streams)]
    errors: list[str] = []

    def handler(i: int):
        covered = [0]

        def on_event(event) -> None:
            now = time.monotonic()
            if event.type == "partial":
                upto = min(round(event.end / packet_s), len(sent[i]))
                for p in range(covered[0], upto):
                    first_cover[i][p] = now
                covered[0] = max(covered[0], upto)
            elif event.type == "error":
                errors.append(event.code)

        return on_event

    cpu0, wall0 = time.process_time(), time.monotonic()
    streams = [engine.open_stream(handler(i), partials=True) for i in range(n_streams)]
    offsets = [int(i * len(audio) / max(n_streams, 1)) // packet * packet for i in range(n_streams)]
    start = time.monotonic()
    for p in range(n_packets):
        for i, st in enumerate(streams):
            target = start + (p + i / n_streams) * packet_s
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            a = (offsets[i] + p * packet) % (len(audio) - packet)
            sent[i].append(time.monotonic())
            st.accept((audio[a : a + packet] * 32767).astype("<i2").tobytes())
    for st in streams:
        st.end()
    for st in streams:
        st.done.wait(60)
    lat = np.array(
        [c - s for i in range(n_streams) for s, c in zip(sent[i], first_cover[i], strict=False) if c == c],
        dtype=np.float64,
    )
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        # CPU seconds per second of stream audio: what one real-time stream costs when CPU is not scarce.
        "cpu_per_stream_s": cpu / (n_streams * seconds),
        "streams": n_streams,
        "packets_with_partial": len(lat),
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p95": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
        "errors": sorted(set(errors)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: the embedded model)")
    parser.add_argument("--large", action="store_true", help="random 24-layer 1024-hidden rel-pos model")
    parser.add_argument("--quantize", choices=["int8"], default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="bfloat16 runs on CPU too; auto = bfloat16 on CPUs with bf16 hardware (streamer/config.py)",
    )
    parser.add_argument(
        "--p95-limit", type=float, default=1.0, help="partial-latency p95 (s) a concurrency trial must meet"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="test audio length")
    parser.add_argument("--audio", help="use this audio file instead of synthesized speech")
    parser.add_argument(
        "--voices",
        type=voice_list,
        help="comma list of synthesizer voices, one per sentence in turn (default: 4 flite voices)",
    )
    parser.add_argument("--left-context-s", dest="left_context_s", type=float)
    parser.add_argument("--chunk-s", dest="chunk_s", type=float)
    parser.add_argument("--lookahead-s", dest="lookahead_s", type=float)
    parser.add_argument("--normalization", choices=["window", "running"])
    parser.add_argument("--max-batch", type=int, default=0)
    parser.add_argument("--streams", default="1,8,16,24,32,40,48,64,96,128", help="concurrency ladder")
    parser.add_argument("--stream-seconds", type=float, default=15.0, help="length of each concurrency trial")
    parser.add_argument("--skip-concurrency", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    from model.audio import load_audio
    from streamer.engine import RecognitionEngine

    torch.set_num_threads(args.threads)
    tmp = None
    model_dir = args.model
    if args.large:
        tmp = tempfile.TemporaryDirectory()
        model_dir = str(make_large_model(Path(tmp.name) / "random-large-24x1024"))
    settings = build_settings(args, model_dir)
    engine = RecognitionEngine(settings)
    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(torch.device(device))})"
    st = settings.streaming
    print(
        f"device: {device}, threads: {torch.get_num_threads()}, model: {engine.model_name}"
        f"{' (random large)' if args.large else ''}, quantize: {args.quantize}, dtype: {args.dtype}"
    )
    print(
        f"layout: left {st.left_context_s} s, chunk {st.chunk_s} s, look-ahead {st.lookahead_s} s, "
        f"normalization {st.normalization}, max_batch {settings.batching.max_batch}"
    )
    if args.audio:
        audio, text = load_audio(args.audio), ""
    else:
        audio, text = synthesize_speech(args.seconds, voices=args.voices)
    seconds = len(audio) / 16000
    results: dict = {"device": device, "model": engine.model_name, "audio_seconds": seconds}

    off_s = offline_seconds(engine, audio)
    offline = engine.transcribe(audio).text
    stream_s, streamed, _ = streaming_run(engine, audio)
    cer, wer = error_rates(streamed, offline)
    results.update(
        offline_compute_s=off_s,
        streaming_compute_s=stream_s,
        compute_ratio=stream_s / off_s,
        cer_vs_offline=cer,
        wer_vs_offline=wer,
    )
    print(
        f"audio {seconds:.1f} s; offline forward {off_s:.2f} CPU s (RTF {off_s / seconds:.3f}); "
        f"streaming {stream_s:.2f} CPU s (RTF {stream_s / seconds:.3f}); compute ratio {stream_s / off_s:.2f}x"
    )
    print(f"streamed vs offline: CER {cer:.2%}, WER {wer:.2%}")
    if text:
        # Both against the truth: tells "streaming differs" apart from "streaming is worse".
        ref_cer, ref_wer = error_rates(offline, text)
        stream_cer, stream_wer = error_rates(streamed, text)
        results.update(
            offline_cer_vs_text=ref_cer,
            offline_wer_vs_text=ref_wer,
            streamed_cer_vs_text=stream_cer,
            streamed_wer_vs_text=stream_wer,
        )
        print(f"offline vs synthesized text: CER {ref_cer:.2%}, WER {ref_wer:.2%}")
        print(f"streamed vs synthesized text: CER {stream_cer:.2%}, WER {stream_wer:.2%}")

    if not args.skip_concurrency:
        engine.start()
        trials = []
        best = 0
        for n in [int(v) for v in args.streams.split(",")]:
            trial = realtime_trial(engine, audio, n, args.stream_seconds)
            ok = trial["p95"] <= args.p95_limit and not trial["errors"]
            trials.append(trial)
            print(
                f"{n:4d} real-time streams: CPU {trial['cpu_s']:.1f} s in {trial['wall_s']:.1f} s wall "
                f"({trial['cpu_per_stream_s']:.4f} CPU s per stream-second); "
                f"partial latency p50 {trial['p50'] * 1000:.0f} ms, "
                f"p95 {trial['p95'] * 1000:.0f} ms, errors {trial['errors'] or 'none'} -> {'ok' if ok else 'FAIL'}"
            )
            if not ok:
                break
            best = n
        engine.stop(drain=False)
        results.update(trials=trials, max_realtime_streams=best)
        print(f"most concurrent real-time streams with p95 <= {args.p95_limit:g} s: {best}")
        per_stream = (
            min(t["cpu_per_stream_s"] for t in trials if t["streams"] >= 8)
            if any(t["streams"] >= 8 for t in trials)
            else trials[-1]["cpu_per_stream_s"]
        )
        capacity = args.threads / per_stream
        results["cpu_capacity_streams"] = capacity
        print(
            f"CPU-bound capacity ({args.threads} cores fully ours): {capacity:.0f} real-time streams "
            f"({per_stream:.4f} CPU s per stream-second); a shared machine holds fewer"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
