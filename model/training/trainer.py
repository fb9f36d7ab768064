"""CTC training of a small Wav2Vec2-Conformer on the synthetic corpus.

* length-bucketed batches by total (padded) audio seconds, re-read from the corpus shards every epoch
  (so training can start while synthesis is still adding data);
* on-the-fly augmentation (:mod:`model.training.augment`) and SpecAugment (the model's own time/feature
  masking, configured by ``mask_time_prob`` etc.);
* AdamW, linear warm-up then cosine decay; bf16 autocast on CUDA, on CPU only with ``cpu_bf16``;
* resumable checkpoints (model, optimizer, scheduler, step, RNG states) every ``checkpoint_minutes``;
* periodic greedy CER on a fixed subset of the synthetic held-out-voice set; ``best.pt`` keeps the best;
* optional context consistency (``consistency_weight``): frame-aligned crops of the batch go through the
  model again and their frames are pulled toward the whole input's (KL), so that a frame's output
  depends little on how much audio surrounds it. Streaming windows and offline windows then agree.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from model.ctc import greedy_collapse
from model.feature_extraction import NORMALIZATION_EPSILON, normalize_waveform
from model.training import augment as aug
from model.training.evaluation import error_rates
from model.training.progress import progress_bar
from model.training.text import join_split_compounds

log = logging.getLogger(__name__)

# The character vocabulary of facebook/wav2vec2-*-960h (same ids).
VOCAB_TOKENS = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "|",
    "E",
    "T",
    "A",
    "O",
    "N",
    "I",
    "H",
    "S",
    "R",
    "D",
    "L",
    "U",
    "M",
    "W",
    "C",
    "F",
    "G",
    "Y",
    "P",
    "B",
    "V",
    "K",
    "'",
    "X",
    "J",
    "Q",
    "Z",
]
VOCAB = {t: i for i, t in enumerate(VOCAB_TOKENS)}


def encode_text(text: str) -> list[int]:
    return [VOCAB.get(c, VOCAB["<unk>"]) if c != " " else VOCAB["|"] for c in text.strip()]


def decode_ids(ids: list[int]) -> str:
    """Greedy CTC text of frame labels (blank 0, '|' → space, specials print nothing)."""
    out = [VOCAB_TOKENS[i] for i in greedy_collapse(ids, blank_id=0)]
    text = "".join(t if len(t) == 1 or t == "|" else "" for t in out).replace("|", " ")
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------------
# configuration


CONSISTENCY_TARGETS = ("distribution", "argmax")


@dataclass
class TrainConfig:
    name: str = "en-small"
    seed: int = 1234
    model: dict[str, Any] = field(default_factory=dict)
    filterbank_init: bool = False  # start the first conv as a Gabor filterbank (filterbank_init.py)
    # start from an exported model (Hugging Face layout, relative to the project root, absolute or ~/...) when the
    # run directory has no checkpoint yet; a fresh optimizer and schedule then start from step 0
    init_from: str = ""
    # with init_from: a fresh Conformer layer goes right after each of these layers of the exported model,
    # made to leave its output unchanged (grow.py); model.num_hidden_layers counts them
    grow_layers_after: list[int] = field(default_factory=list)
    # data
    train_dirs: list[str] = field(default_factory=lambda: ["corpus/train"])
    eval_dir: str = "corpus/eval"
    min_seconds: float = 0.4
    max_seconds: float = 16.0
    batch_seconds: float = 60.0
    max_batch: int = 32
    eval_subset: int = 60
    augment: dict[str, Any] = field(default_factory=dict)
    p_augment: float = 0.85
    # share of utterances that go into examples chaining 2..max_voices utterances, each by another voice
    # than the one before (joined by short pauses): a model trained on one voice per input degrades on
    # inputs whose voice changes, the more the longer they are (whole files, conversations)
    p_voice_change: float = 0.0
    max_voices: int = 2
    pause_seconds: tuple[float, float] = (0.15, 0.6)
    # real speech (real_speech.py): the training part of `real_dir` makes up `real_share` of each epoch's
    # utterances (repeated as needed), augmented with `augment_real` at `p_augment_real`; its held-back
    # development part joins the monitor when `eval_real_dev` is set
    real_dir: str = ""
    real_share: float = 0.0
    augment_real: dict[str, Any] = field(default_factory=dict)
    p_augment_real: float = 0.9
    eval_real_dev: bool = False
    # non-speech (nonspeech.py): `nonspeech_share` of each epoch's examples are non-speech alone with an
    # empty target; `p_splice_nonspeech` of the examples get non-speech before and/or after them (and in
    # the pauses of chained ones), `splice_seconds` long each
    nonspeech_share: float = 0.0
    nonspeech_seconds: tuple[float, float] = (0.5, 8.0)
    p_splice_nonspeech: float = 0.0
    splice_seconds: tuple[float, float] = (0.2, 1.5)
    num_workers: int = 1
    sortagrad_epochs: int = 1  # first epoch(s): shortest batches first (helps CTC leave the blank plateau)
    # optimization
    lr: float = 1.5e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 500
    max_steps: int = 20000
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    # bf16 autocast on CPU too. Off by default: on an AVX2 host bf16 was slower than fp32, and on the 2-core
    # AMX host it is no faster for en-small (session 17, 60 steps each: 0.55 vs 0.50 s/step; its GEMMs are too
    # small to gain). The crawl of session 16 was oneDNN generating bf16 depthwise kernels for minutes per
    # new shape; those convolutions now run in fp32 (model.channels_last.conv1d_time_major)
    cpu_bf16: bool = False
    # context consistency: KL(whole input || crop) per frame, weighted; 0 = off. Crops of 1.5-4 s start on
    # frame boundaries (so crop frame k is whole-input frame start + k), about `consistency_seconds` of
    # them per batch; frames within `consistency_edge_s` of a crop edge are left out (no context there)
    consistency_weight: float = 0.0
    consistency_crop_seconds: tuple[float, float] = (1.5, 4.0)
    consistency_seconds: float = 8.0
    consistency_edge_s: float = 0.2
    # what the crop is pulled toward: "distribution" (KL to the whole input's frame distributions) or
    # "argmax" (cross-entropy to the whole input's most likely token per frame: agreement of the decoded
    # frames, which is what streamed text depends on)
    consistency_target: str = "distribution"
    # share of crops normalized on their own (per-window normalization); the rest keep the whole
    # utterance's statistics (as running normalization does)
    consistency_renormalize: float = 0.5
    # bookkeeping
    log_every: int = 25
    eval_every: int = 250
    checkpoint_minutes: float = 10.0
    threads: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.real_share + self.nonspeech_share < 1:
            raise ValueError("real_share + nonspeech_share must be in [0, 1)")
        if self.real_share > 0 and not self.real_dir:
            raise ValueError("real_share > 0 needs real_dir")
        if self.consistency_target not in CONSISTENCY_TARGETS:
            raise ValueError(
                f"consistency_target must be one of {CONSISTENCY_TARGETS}, not {self.consistency_target!r}"
            )

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        data = tomllib.loads(Path(path).read_text())
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("train", "data", "optim", "log", "init") and isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(flat) - known
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        for key in (
            "betas",
            "pause_seconds",
            "consistency_crop_seconds",
            "nonspeech_seconds",
            "splice_seconds",
        ):
            if key in flat:
                flat[key] = tuple(flat[key])
        return cls(**flat)


def model_config(cfg: TrainConfig) -> dict[str, Any]:
    base = {
        "vocab_size": len(VOCAB_TOKENS),
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "conv_bias": True,
        "position_embeddings_type": "rotary",
        "ctc_loss_reduction": "mean",
        "ctc_zero_infinity": True,
        "layerdrop": 0.0,
        "final_dropout": 0.0,
        "architectures": ["Wav2Vec2ConformerForCTC"],
    }
    base.update(cfg.model)
    for key in ("conv_dim", "conv_kernel", "conv_stride"):
        if key in base:
            base[key] = tuple(base[key])
    return base


def build_model(cfg: TrainConfig, backend: str = "ours"):
    kwargs = model_config(cfg)
    if backend == "transformers":
        from transformers import Wav2Vec2ConformerConfig, Wav2Vec2ConformerForCTC
    else:
        from model import Wav2Vec2ConformerConfig, Wav2Vec2ConformerForCTC
    return Wav2Vec2ConformerForCTC(Wav2Vec2ConformerConfig(**kwargs))


# ---------------------------------------------------------------------------------------------------
# data


def read_records(dirs: list[Path]) -> list[dict]:
    from model.training.synthesis import read_manifest

    out = []
    for d in dirs:
        if (d / "shards").exists():
            out.extend(read_manifest(d))
        elif (d / "manifest.jsonl").exists():
            for line in (d / "manifest.jsonl").read_text().splitlines():
                r = json.loads(line)
                r["path"] = str(d / r["path"])
                out.append(r)
    return out


def chain_voices(
    records: list[dict],
    share: float,
    max_seconds: float,
    pause: tuple[float, float],
    rng: random.Random,
    max_voices: int = 2,
) -> list[dict]:
    """Join about a ``share`` of the records into examples of 2..``max_voices`` utterances in turn, each
    spoken by another voice than the one before it.

    A joined record carries ``parts`` (its source records, in order), ``pauses`` (seconds of silence
    after each part but the last) and the joined text; its duration stays ≤ ``max_seconds``. A first
    utterance that finds no partner stays single; every record is used exactly once.
    """
    if share <= 0:
        return records
    order = list(range(len(records)))
    rng.shuffle(order)
    most = max(2, max_voices)
    n_chains = int(len(order) * share / ((2 + most) / 2))  # chains hold (2 + most) / 2 parts on average
    firsts, pool = order[:n_chains], order[n_chains:]
    singles, joined, used = [], [], set()
    for i in firsts:
        parts, pauses = [records[i]], []
        duration = records[i]["duration"]
        want = rng.randint(2, most)
        while len(parts) < want:
            gap = rng.uniform(*pause)
            partner = None
            # a few draws (so voices are weighted by their utterances): another voice, unused, fits
            for _ in range(16):
                j = pool[rng.randrange(len(pool))]
                if (
                    j not in used
                    and records[j]["voice"] != parts[-1]["voice"]
                    and duration + gap + records[j]["duration"] <= max_seconds
                ):
                    partner = j
                    break
            if partner is None:
                break
            used.add(partner)
            parts.append(records[partner])
            pauses.append(gap)
            duration += gap + records[partner]["duration"]
        if len(parts) == 1:
            singles.append(parts[0])
            continue
        joined.append(
            {
                "parts": parts,
                "pauses": pauses,
                "voice": "+".join(r["voice"] for r in parts),
                "text": " ".join(r["text"] for r in parts if r["text"]),
                "duration": duration,
            }
        )
    singles += [records[i] for i in pool if i not in used]
    return singles + joined


def mix_epoch(synthetic: list[dict], real: list[dict], cfg: TrainConfig, rng: random.Random) -> list[dict]:
    """One epoch's records: the synthetic ones, real ones making up ``real_share`` of the utterances
    (cycled through in a shuffled order, so each is used about equally often) and ``nonspeech_share`` of
    non-speech records (empty text; the audio is drawn when the batch is read)."""
    total = len(synthetic) / (1 - cfg.real_share - cfg.nonspeech_share)
    out = list(synthetic)
    if real and cfg.real_share > 0:
        order: list[dict] = []
        while len(order) < round(cfg.real_share * total):
            order += rng.sample(real, len(real))
        out += order[: round(cfg.real_share * total)]
    lo, hi = cfg.nonspeech_seconds
    for k in range(round(cfg.nonspeech_share * total) if cfg.nonspeech_share > 0 else 0):
        out.append(
            {"nonspeech": True, "text": "", "voice": "nonspeech", "duration": rng.uniform(lo, hi), "id": k}
        )
    return out


def splice_nonspeech(records: list[dict], cfg: TrainConfig, rng: random.Random) -> list[dict]:
    """About ``p_splice_nonspeech`` of the records get non-speech before, after or on both sides
    (``lead``/``tail`` seconds, within ``max_seconds``); the others are returned as they are."""
    if cfg.p_splice_nonspeech <= 0:
        return records
    out = []
    for r in records:
        if r.get("nonspeech") or rng.random() >= cfg.p_splice_nonspeech:
            out.append(r)
            continue
        side = rng.choice(["lead", "tail", "both"])
        lead = rng.uniform(*cfg.splice_seconds) if side in ("lead", "both") else 0.0
        tail = rng.uniform(*cfg.splice_seconds) if side in ("tail", "both") else 0.0
        if r["duration"] + lead + tail > cfg.max_seconds:
            out.append(r)
            continue
        out.append({**r, "lead": lead, "tail": tail, "duration": r["duration"] + lead + tail})
    return out


def make_batches(
    records: list[dict], batch_seconds: float, max_batch: int, rng: random.Random, shuffle: bool = True
) -> list[list[int]]:
    """Indices grouped by similar duration; padded seconds per batch ≤ batch_seconds."""
    order = sorted(range(len(records)), key=lambda i: records[i]["duration"] * rng.uniform(0.95, 1.05))
    batches, current, longest = [], [], 0.0
    for i in order:
        d = records[i]["duration"]
        if current and (max(longest, d) * (len(current) + 1) > batch_seconds or len(current) >= max_batch):
            batches.append(current)
            current, longest = [], 0.0
        current.append(i)
        longest = max(longest, d)
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate(waves: list[np.ndarray], texts: list[str] | None = None):
    n = max(len(w) for w in waves)
    values = torch.zeros(len(waves), n)
    mask = torch.zeros(len(waves), n, dtype=torch.long)
    for i, w in enumerate(waves):
        values[i, : len(w)] = torch.from_numpy(normalize_waveform(w))
        mask[i, : len(w)] = 1
    labels = None
    if texts is not None:
        ids = [encode_text(t) for t in texts]
        # at least one column: a batch of non-speech alone has only empty targets
        labels = torch.full((len(ids), max(1, *(len(x) for x in ids))), -100, dtype=torch.long)
        for i, x in enumerate(ids):
            labels[i, : len(x)] = torch.tensor(x)
    return values, mask, labels


def _augment_config(settings: dict[str, Any]) -> aug.AugmentConfig:
    return aug.AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})


class BatchDataset(torch.utils.data.Dataset):
    def __init__(self, records: list[dict], batches: list[list[int]], cfg: TrainConfig, seed: int) -> None:
        self.records, self.batches, self.cfg, self.seed = records, batches, cfg, seed
        self.aug_cfg = _augment_config(cfg.augment)
        self.aug_real = _augment_config(cfg.augment_real)

    def __len__(self) -> int:
        return len(self.batches)

    def _nonspeech(self, seconds: float, rng: np.random.Generator) -> np.ndarray:
        from model.training.nonspeech import nonspeech

        return nonspeech(seconds, rng)

    def _read(self, record: dict, rng: np.random.Generator) -> np.ndarray:
        if record.get("nonspeech"):
            x = self._nonspeech(record["duration"], rng)
            if rng.random() < self.cfg.p_augment:
                x = aug.augment(x, rng, self.aug_cfg)
            return x
        x, _ = sf.read(record["path"], dtype="float32")
        if record.get("real"):
            if rng.random() < self.cfg.p_augment_real:
                x = aug.augment(x, rng, self.aug_real)
        elif rng.random() < self.cfg.p_augment:
            x = aug.augment(x, rng, self.aug_cfg)
        return x

    def _gap(self, seconds: float, rng: np.random.Generator) -> np.ndarray:
        """The pause between chained utterances: a faint noise floor like the rest of the synthetic audio,
        or non-speech at the splicing rate."""
        if rng.random() < self.cfg.p_splice_nonspeech:
            return self._nonspeech(seconds, rng)
        return rng.normal(0, 10 ** (-70 / 20), int(seconds * aug.SR)).astype(np.float32)

    def __getitem__(self, k: int):
        rng = np.random.default_rng([self.seed, k])
        waves, texts = [], []
        for i in self.batches[k]:
            r = self.records[i]
            if "parts" in r:
                pieces = []
                for n, part in enumerate(r["parts"]):
                    if n:
                        pieces.append(self._gap(r["pauses"][n - 1], rng))
                    pieces.append(self._read(part, rng))
                x = np.concatenate(pieces)
            else:
                x = self._read(r, rng)
            if r.get("lead") or r.get("tail"):
                x = np.concatenate(
                    [self._nonspeech(r.get("lead", 0.0), rng) if r.get("lead") else x[:0], x]
                    + ([self._nonspeech(r["tail"], rng)] if r.get("tail") else [])
                )
            waves.append(x)
            # targets in today's spelling ("TO DAY" -> "TODAY"): the words the LM writes; same sound
            texts.append(join_split_compounds(r["text"]))
        return collate(waves, texts)


# ---------------------------------------------------------------------------------------------------
# evaluation helpers


@torch.no_grad()
def transcribe_batch(model, waves: list[np.ndarray], device: torch.device) -> list[str]:
    values, mask, _ = collate(waves)
    logits = model(values.to(device), attention_mask=mask.to(device)).logits
    lengths = model._get_feat_extract_output_lengths(mask.sum(-1)).tolist()
    ids = logits.argmax(-1).cpu().tolist()
    return [decode_ids(row[: int(n)]) for row, n in zip(ids, lengths, strict=True)]


def greedy_error_rates(
    model, records: list[dict], device: torch.device, batch_seconds: float = 120.0
) -> dict:
    was_training = model.training
    model.eval()
    refs, hyps = [], []
    order = sorted(range(len(records)), key=lambda i: records[i]["duration"])
    batch: list[int] = []
    for i in [*order, None]:
        if i is not None and (not batch or records[i]["duration"] * (len(batch) + 1) <= batch_seconds):
            batch.append(i)
            continue
        if batch:
            waves = [sf.read(records[j]["path"], dtype="float32")[0] for j in batch]
            hyps += transcribe_batch(model, waves, device)
            refs += [records[j]["text"] for j in batch]
        batch = [i] if i is not None else []
    model.train(was_training)
    rates = error_rates(refs, hyps)
    return {
        "cer": rates["cer"],
        "wer": rates["wer"],
        "examples": list(zip(refs[:3], hyps[:3], strict=True)),
    }


# ---------------------------------------------------------------------------------------------------
# training loop


def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def save_checkpoint(path: Path, model, optimizer, scheduler, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": state,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        },
        tmp,
    )
    tmp.replace(path)


def export(model, directory: str | Path, cfg: TrainConfig | None = None) -> Path:
    """Hugging Face layout: config.json, model.safetensors, vocab.json, tokenizer_config.json,
    special_tokens_map.json, preprocessor_config.json."""
    from model.feature_extraction import Wav2Vec2FeatureExtractor
    from model.tokenizer import Wav2Vec2CTCTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    Wav2Vec2CTCTokenizer(VOCAB).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(directory)
    lm = _init_lm(cfg)
    if lm is not None and not (directory / lm.name).exists():
        # the beam decoder's default LM: without it the export decodes with no LM and looks 15 points worse
        shutil.copyfile(lm, directory / lm.name)
    return directory


def _init_lm(cfg: TrainConfig | None) -> Path | None:
    """The word LM beside the model this run started from (``init_from``), if it has one."""
    if cfg is None or not cfg.init_from:
        return None
    lm = Path(cfg.init_from).expanduser() / "lm.arpa.gz"
    return lm if lm.exists() else None


def start_from_export(model, directory: Path, grow_layers_after: list[int] | None = None) -> None:
    """Load the weights of an exported model (``export``'s layout) into a freshly built one, deepened
    first when ``grow_layers_after`` names layers to insert fresh ones after (grow.py)."""
    from model.checkpoint import load_state_dict_into, read_state_dict

    state = read_state_dict(directory)
    if grow_layers_after:
        from model.training.grow import deepen_state_dict

        state = deepen_state_dict(state, model.state_dict(), grow_layers_after)
    load_state_dict_into(model, state, strict=True)
    log.warning(
        "initialized from %s%s",
        directory,
        f", a fresh layer after each of layers {grow_layers_after}" if grow_layers_after else "",
    )


def choose_crops(
    lengths: list[int], stride: int, cfg: TrainConfig, rng: random.Random
) -> tuple[int, list[int], list[int]] | None:
    """(crop length in samples, the utterances cropped, each crop's first frame) for a batch of
    ``lengths`` samples, or None when no utterance is long enough: crops start on frame boundaries, so
    crop frame k is whole-input frame start + k."""
    lo, hi = cfg.consistency_crop_seconds
    crop = max(1, round(rng.uniform(lo, hi) * 16000 / stride)) * stride
    candidates = [i for i, n in enumerate(lengths) if n >= crop + stride]
    if not candidates:
        return None
    count = min(len(candidates), max(1, round(cfg.consistency_seconds * 16000 / crop)))
    chosen = rng.sample(candidates, count)
    starts = [rng.randrange(0, (int(lengths[i]) - crop) // stride + 1) for i in chosen]
    return crop, chosen, starts


def context_consistency_loss(
    model,
    values: torch.Tensor,
    mask: torch.Tensor,
    logits: torch.Tensor,
    cfg: TrainConfig,
    rng: random.Random,
) -> torch.Tensor | None:
    """Mean per-frame KL(whole || crop), or cross-entropy to the whole input's arg-max token
    (``consistency_target``), over frame-aligned crops of the batch; None when no utterance is long enough
    for a crop.

    ``values``/``mask``: the batch (B, N) as the model saw it; ``logits``: its output (B, F, V). The
    whole-input distribution is the target (no gradient): CTC keeps it right, this term makes the crop
    (a window with little context, as in streaming) agree with it.
    """
    stride = math.prod(model.config.conv_stride)
    picked = choose_crops(mask.sum(-1).tolist(), stride, cfg, rng)
    if picked is None:
        return None
    crop, chosen, starts = picked
    crops = torch.stack(
        [values[i, s * stride : s * stride + crop] for i, s in zip(chosen, starts, strict=True)]
    )
    renorm = torch.tensor([rng.random() < cfg.consistency_renormalize for _ in chosen], device=crops.device)
    renorm = renorm[:, None]
    own = (crops - crops.mean(-1, keepdim=True)) / torch.sqrt(
        crops.var(-1, keepdim=True) + NORMALIZATION_EPSILON
    )
    crops = torch.where(renorm, own, crops)
    student = model(crops).logits.float().log_softmax(-1)  # (count, Fc, V)
    frames = student.shape[1]
    edge = min(round(cfg.consistency_edge_s * 16000 / stride), (frames - 1) // 2)
    # (count, Fc, V): the whole input's frames the crops cover
    teacher = torch.stack([logits[i, s : s + frames] for i, s in zip(chosen, starts, strict=True)])
    teacher = teacher.detach().float().log_softmax(-1)
    if cfg.consistency_target == "argmax":
        per_frame = -student.gather(-1, teacher.argmax(-1, keepdim=True)).squeeze(-1)  # (count, Fc)
    else:
        per_frame = (teacher.exp() * (teacher - student)).sum(-1)  # KL, (count, Fc)
    return per_frame[:, edge : frames - edge].mean()


# ---------------------------------------------------------------------------------------------------
# the recipe: parameters, optimizer, compute_loss, train_one_epoch, validation, checkpointing


@dataclass
class TrainingRun:
    """What a run carries from step to step; ``state`` is what a checkpoint keeps besides the weights."""

    cfg: TrainConfig
    home: Path
    run_dir: Path
    device: torch.device
    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    state: dict[str, Any]
    eval_subset: list[dict]  # fixed held-out utterances scored every ``eval_every`` steps
    real_train: list[dict]  # real recordings mixed into every epoch (``real_dir``)
    bar: Any  # progress bar (tqdm's when installed)
    stop_at: int | None = None  # step to stop at in this invocation (``max_steps_now``)
    max_minutes: float | None = None
    consistency_rng: random.Random = field(default_factory=random.Random)
    t_start: float = field(default_factory=time.time)  # wall clock not yet added to state["seconds"]
    t_ckpt: float = field(default_factory=time.time)  # when last.pt was last written

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "train.log"

    def autocast(self) -> Any:
        """bf16 autocast on CUDA, and on CPU when ``cpu_bf16`` is set (see there)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.cpu_bf16)

    def log(self, record: dict[str, Any]) -> None:
        """One JSON line in the run's ``train.log``."""
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def fresh_state() -> dict[str, Any]:
    return {
        "step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "best_cer": None,
        "seconds": 0.0,
        "audio_seconds": 0.0,
        "history": [],
    }


def build_optimizer(
    model, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW without weight decay on norms and biases; linear warm-up, then cosine decay (`lr_lambda`)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))


def load_checkpoint(path: Path, model, optimizer, scheduler, device: torch.device) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote (weights, optimizer, schedule, RNG states); returns the state."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    np.random.set_state(ckpt["rng"]["numpy"])
    random.setstate(ckpt["rng"]["python"])
    return ckpt["state"]


def held_out_records(cfg: TrainConfig, home: Path) -> tuple[list[dict], list[dict]]:
    """(validation utterances, real training utterances): a fixed subset of the synthetic held-out
    voices, plus the real recordings' development share when ``eval_real_dev``."""
    eval_records = read_records([home / cfg.eval_dir]) if (home / cfg.eval_dir).exists() else []
    eval_records = sorted(eval_records, key=lambda r: r["path"])
    eval_subset = random.Random(0).sample(eval_records, min(cfg.eval_subset, len(eval_records)))
    real_train: list[dict] = []
    if cfg.real_dir:
        from model.training.real_speech import read_real_speech, split_real

        real_train_utts, real_dev_utts = split_real(read_real_speech(Path(cfg.real_dir).expanduser()))
        real_train = [u.record() for u in real_train_utts]
        if cfg.eval_real_dev:
            eval_subset += [u.record() for u in real_dev_utts]
        log.warning(
            "real speech: %d training utterances (%.2f h), %d held back for development",
            len(real_train),
            sum(r["duration"] for r in real_train) / 3600,
            len(real_dev_utts),
        )
    return eval_subset, real_train


def start_run(
    cfg: TrainConfig,
    home: Path,
    device: str = "cpu",
    resume: bool = True,
    progress: bool = True,
    backend: str = "ours",
    max_steps_now: int | None = None,
    run_dir: Path | None = None,
    max_minutes: float | None = None,
) -> TrainingRun:
    """Seed, build the model (from an export or a checkpoint to resume), the optimizer and the data."""
    torch.set_num_threads(cfg.threads)
    dev = torch.device(device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    run_dir = run_dir or home / "runs" / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg, backend)
    if cfg.filterbank_init:
        from model.training.filterbank_init import init_feature_encoder_as_filterbank

        init_feature_encoder_as_filterbank(model)
    last = run_dir / "last.pt"
    resuming = resume and last.exists()
    if cfg.init_from and not resuming:
        # before the optimizer is built: loading assigns new parameter tensors
        start_from_export(model, Path(cfg.init_from).expanduser(), cfg.grow_layers_after)
    model = model.to(dev)
    model.train()
    optimizer, scheduler = build_optimizer(model, cfg)
    state = fresh_state()
    if resuming:
        state = load_checkpoint(last, model, optimizer, scheduler, dev)
        log.warning("resumed %s at step %d", last, state["step"])
    (run_dir / "config.json").write_text(
        json.dumps({"train": cfg.__dict__, "model": model_config(cfg)}, indent=1, default=list)
    )
    eval_subset, real_train = held_out_records(cfg, home)
    bar = progress_bar(
        initial=state["step"],
        total=cfg.max_steps,
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=10,
    )
    n_params = sum(p.numel() for p in model.parameters())
    bar.write(f"model: {n_params / 1e6:.2f} M parameters; run dir {run_dir}")
    return TrainingRun(
        cfg=cfg,
        home=home,
        run_dir=run_dir,
        device=dev,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        state=state,
        eval_subset=eval_subset,
        real_train=real_train,
        bar=bar,
        stop_at=state["step"] + max_steps_now if max_steps_now else None,
        max_minutes=max_minutes,
        # its own stream, seeded by the step: resuming continues the same sequence of crops
        consistency_rng=random.Random(cfg.seed * 7919 + state["step"]),
    )


def epoch_loader(run: TrainingRun) -> torch.utils.data.DataLoader:
    """This epoch's batches from where the run stands in it (the shards are re-read every epoch)."""
    cfg, state = run.cfg, run.state
    records = [
        r
        for r in read_records([run.home / d for d in cfg.train_dirs])
        if cfg.min_seconds <= r["duration"] <= cfg.max_seconds
    ]
    if not records:
        raise SystemExit("no training data: run `conformer-streamer synthesize` first")
    epoch_rng = random.Random(cfg.seed * 1000 + state["epoch"])
    records = mix_epoch(records, run.real_train, cfg, epoch_rng)
    records = chain_voices(
        records, cfg.p_voice_change, cfg.max_seconds, cfg.pause_seconds, epoch_rng, cfg.max_voices
    )
    records = splice_nonspeech(records, cfg, epoch_rng)
    batches = make_batches(
        records,
        cfg.batch_seconds,
        cfg.max_batch,
        epoch_rng,
        shuffle=state["epoch"] >= cfg.sortagrad_epochs,
    )
    dataset = BatchDataset(records, batches, cfg, seed=cfg.seed * 1000 + state["epoch"])
    subset = torch.utils.data.Subset(dataset, range(state["batch_in_epoch"], len(batches)))
    run.bar.write(
        f"epoch {state['epoch']}: {len(records)} utterances, "
        f"{sum(r['duration'] for r in records) / 3600:.2f} h, {len(batches)} batches"
    )
    return torch.utils.data.DataLoader(
        subset,
        batch_size=None,
        shuffle=False,
        num_workers=cfg.num_workers,
        worker_init_fn=lambda _: torch.set_num_threads(1),
        prefetch_factor=4 if cfg.num_workers else None,
        persistent_workers=False,
    )


def compute_loss(
    model,
    values: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    rng: random.Random,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(loss to minimize, its context-consistency term or None): CTC + ``consistency_weight`` x consistency."""
    out = model(values, attention_mask=mask, labels=labels)
    consistency = (
        context_consistency_loss(model, values, mask, out.logits, cfg, rng)
        if cfg.consistency_weight > 0
        else None
    )
    loss = out.loss if consistency is None else out.loss + cfg.consistency_weight * consistency
    return loss, consistency


def train_one_epoch(run: TrainingRun) -> bool:
    """Train to the end of the epoch, or until the run is finished (then True)."""
    cfg, state, model = run.cfg, run.state, run.model
    for values, mask, labels in epoch_loader(run):
        values, mask, labels = values.to(run.device), mask.to(run.device), labels.to(run.device)
        with run.autocast():
            loss, consistency = compute_loss(model, values, mask, labels, cfg, run.consistency_rng)
        if not torch.isfinite(loss):  # skip the batch, keep the place in the epoch
            run.optimizer.zero_grad(set_to_none=True)
            state["batch_in_epoch"] += 1
            continue
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["batch_in_epoch"] += 1
        state["audio_seconds"] += float(mask.sum()) / 16000
        run.bar.update(1)
        run.bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
        if state["step"] % cfg.log_every == 0:
            run.log(
                {
                    "step": state["step"],
                    "loss": round(loss.item(), 4),
                    **({"consistency": round(consistency.item(), 4)} if consistency is not None else {}),
                    "gnorm": round(float(gnorm), 3),
                    "lr": run.scheduler.get_last_lr()[0],
                    "audio_h": round(state["audio_seconds"] / 3600, 3),
                    "elapsed_s": round(state["seconds"] + time.time() - run.t_start),
                }
            )
        if run.eval_subset and state["step"] % cfg.eval_every == 0:
            validate(run)
        finished = is_finished(run)
        if finished or time.time() - run.t_ckpt > cfg.checkpoint_minutes * 60:
            checkpoint(run)
        if finished:
            return True
    state["epoch"] += 1
    state["batch_in_epoch"] = 0
    return False


def validate(run: TrainingRun) -> dict:
    """Greedy CER/WER on the held-out subset: logged, kept in the history, ``best.pt`` when best so far."""
    state = run.state
    m = greedy_error_rates(run.model, run.eval_subset, run.device)
    run.bar.write(
        f"step {state['step']}: held-out greedy CER {m['cer']:.3f} WER {m['wer']:.3f} | {m['examples'][0][1]!r}"
    )
    state["history"].append({"step": state["step"], "cer": m["cer"], "wer": m["wer"]})
    run.log({"step": state["step"], "eval_cer": m["cer"], "eval_wer": m["wer"]})
    if state["best_cer"] is None or m["cer"] < state["best_cer"]:
        state["best_cer"] = m["cer"]
        torch.save(
            {"model": run.model.state_dict(), "step": state["step"], "cer": m["cer"]}, run.run_dir / "best.pt"
        )
    return m


def is_finished(run: TrainingRun) -> bool:
    """At ``max_steps``, at this invocation's step limit, or out of minutes."""
    step = run.state["step"]
    elapsed_min = (time.time() - run.t_start) / 60
    return (
        step >= run.cfg.max_steps
        or (run.stop_at is not None and step >= run.stop_at)
        or (run.max_minutes is not None and elapsed_min >= run.max_minutes)
    )


def checkpoint(run: TrainingRun) -> None:
    """Write ``last.pt`` (everything a resume needs) and account the wall time in the state."""
    run.state["seconds"] += time.time() - run.t_start
    run.t_start = time.time()
    save_checkpoint(run.last_checkpoint, run.model, run.optimizer, run.scheduler, run.state)
    run.t_ckpt = time.time()


def train(
    cfg: TrainConfig,
    home: Path,
    device: str = "cpu",
    max_minutes: float | None = None,
    resume: bool = True,
    progress: bool = True,
    backend: str = "ours",
    max_steps_now: int | None = None,
    run_dir: Path | None = None,
) -> dict:
    """Train (or resume) the run ``cfg.name`` under ``home``; returns the model, its state and run dir."""
    run = start_run(cfg, home, device, resume, progress, backend, max_steps_now, run_dir, max_minutes)
    while not train_one_epoch(run):
        pass
    run.bar.close()
    return {"model": run.model, "state": run.state, "run_dir": run.run_dir}
