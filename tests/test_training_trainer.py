"""A few optimizer steps on tiny data lower the CTC loss; checkpoints resume; export loads back."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
import soundfile as sf
import torch

from model.training import trainer
from streamer.server.testing import TINY_CONFIG

# The tests' tiny model, one layer, group-norm front end (as the embedded model's early stages), and
# deterministic: no dropout, no masking.
TINY = {
    **TINY_CONFIG,
    "num_hidden_layers": 1,
    "intermediate_size": 48,
    "conv_depthwise_kernel_size": 3,
    "num_conv_pos_embedding_groups": 4,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "mask_time_prob": 0.0,
    "hidden_dropout": 0.0,
    "activation_dropout": 0.0,
    "attention_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "conformer_conv_dropout": 0.0,
}


def _tiny_corpus(root) -> None:
    rng = np.random.default_rng(0)
    shard = root / "corpus" / "train" / "shards"
    shard.mkdir(parents=True)
    (root / "corpus" / "train" / "audio").mkdir()
    rows = []
    for i, text in enumerate(["HELLO", "WORLD IS BIG"]):
        t = np.arange(16000) / 16000
        x = (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.01 * rng.standard_normal(16000)).astype(
            np.float32
        )
        path = f"audio/{i}.flac"
        sf.write(root / "corpus" / "train" / path, x, 16000)
        rows.append({"path": path, "text": text, "duration": 1.0, "engine": "test", "voice": "sine"})
    (shard / "b0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _quick_run_config(name: str, model: dict, **overrides) -> trainer.TrainConfig:
    """A short, fast run on the tiny corpus: a high learning rate, every step logged, no evaluation."""
    return trainer.TrainConfig(
        name=name,
        model=model,
        batch_seconds=4.0,
        p_augment=0.0,
        num_workers=0,
        warmup_steps=1,
        lr=3e-3,
        max_steps=1000,
        eval_every=10**9,
        log_every=1,
        threads=1,
        **overrides,
    )


def _train_log(out: dict) -> list[dict]:
    return [json.loads(x) for x in (out["run_dir"] / "train.log").read_text().splitlines()]


def test_text_codec_roundtrip() -> None:
    ids = trainer.encode_text("IT'S A DOG")
    assert trainer.decode_ids([0, *[i for x in ids for i in (x, x, 0)]]) == "IT'S A DOG"
    assert trainer.VOCAB["<pad>"] == 0 and trainer.VOCAB["|"] == 4 and len(trainer.VOCAB) == 32


def test_few_steps_lower_loss_and_resume(tmp_path) -> None:
    _tiny_corpus(tmp_path)
    cfg = _quick_run_config("tiny", TINY)
    torch.manual_seed(0)
    out = trainer.train(cfg, tmp_path, max_steps_now=30, progress=False)
    log = _train_log(out)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    assert (out["run_dir"] / "last.pt").exists()
    again = trainer.train(cfg, tmp_path, max_steps_now=2, progress=False)
    assert again["state"]["step"] == 32  # resumed, not restarted


def test_cpu_bf16_autocast_trains_in_bf16_with_fp32_weights_and_lowers_the_loss(tmp_path) -> None:
    """``cpu_bf16`` runs the forward in bf16 on CPU (matmul outputs are bf16), keeps the weights fp32, and
    the tiny model still learns."""
    _tiny_corpus(tmp_path)
    cfg = _quick_run_config("bf16", TINY, cpu_bf16=True)
    torch.manual_seed(0)
    out = trainer.train(cfg, tmp_path, max_steps_now=30, progress=False)
    losses = [r["loss"] for r in _train_log(out) if "loss" in r]
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    weights = torch.load(out["run_dir"] / "last.pt", weights_only=False)["model"]
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())
    run = trainer.TrainingRun.__new__(trainer.TrainingRun)
    run.cfg, run.device = cfg, torch.device("cpu")
    with run.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    run.cfg = _quick_run_config("fp32", TINY)
    with run.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("backend", ["ours"])
def test_export_layout(tmp_path, backend) -> None:
    cfg = trainer.TrainConfig(model=TINY)
    model = trainer.build_model(cfg, backend)
    out = trainer.export(model, tmp_path / "m", cfg)
    for name in ("config.json", "model.safetensors", "vocab.json", "preprocessor_config.json"):
        assert (out / name).exists(), name
    from model import Wav2Vec2ConformerForCTC

    back = Wav2Vec2ConformerForCTC.from_pretrained(out)
    back.eval()
    model.eval()
    x = torch.randn(1, 8000)
    with torch.no_grad():
        assert torch.allclose(back(x).logits, model(x).logits, atol=1e-5)


def test_filterbank_start_is_a_mel_spaced_gabor_bank() -> None:
    from model.training.filterbank_init import gabor_filterbank, init_feature_encoder_as_filterbank

    bank = gabor_filterbank(num_bands=16, kernel_size=400)
    assert bank.shape == (32, 400)
    assert torch.allclose(bank.norm(dim=1), torch.ones(32), atol=1e-5)
    # each filter's strongest frequency rises band by band, and cosine/sine partners agree
    response = torch.fft.rfft(bank, n=4096).abs()  # (32, 2049), bins of 16000 / 4096 Hz
    peaks = response.argmax(dim=1).float() * 16000 / 4096
    assert torch.all(peaks[2::2] > peaks[0:-2:2])
    assert torch.allclose(peaks[0::2], peaks[1::2], atol=2 * 16000 / 4096)
    assert 40 < peaks[0] < 200 and peaks[-1] > 6000
    # the quadrature pair is orthogonal: together they measure a phase-free envelope
    assert abs(float(bank[10] @ bank[11])) < 0.05

    cfg = trainer.TrainConfig(
        model={**TINY, "conv_dim": [8, 16, 16], "conv_kernel": [64, 4, 4], "conv_stride": [80 // 5, 2, 2]}
    )
    model = trainer.build_model(cfg)
    init_feature_encoder_as_filterbank(model)
    conv = model.wav2vec2_conformer.feature_extractor.conv_layers[0].conv
    assert torch.allclose(conv.weight[:, 0], gabor_filterbank(4, 64))
    assert float(conv.bias.abs().max()) == 0.0


@pytest.mark.parametrize("max_voices", [2, 4])
def test_voice_change_examples_chain_different_voices_within_the_length_limit(max_voices) -> None:
    records = [
        {"path": f"{v}-{i}.flac", "text": f"{v.upper()} {i}", "duration": 1.0 + i % 5, "voice": v}
        for v in ("kal", "awb", "joe")
        for i in range(40)
    ]
    out = trainer.chain_voices(records, 0.5, 12.0, (0.2, 0.4), random.Random(0), max_voices)
    joined = [r for r in out if "parts" in r]
    in_chains = sum(len(r["parts"]) for r in joined)
    assert 0.35 * len(records) <= in_chains <= 0.6 * len(records)  # about half, some firsts stay single
    used = [p["path"] for r in joined for p in r["parts"]] + [r["path"] for r in out if "parts" not in r]
    assert sorted(used) == sorted(r["path"] for r in records)  # every utterance exactly once
    assert max(len(r["parts"]) for r in joined) == max_voices
    for r in joined:
        parts = r["parts"]
        assert 2 <= len(parts) <= max_voices and len(r["pauses"]) == len(parts) - 1
        assert all(a["voice"] != b["voice"] for a, b in itertools.pairwise(parts))
        assert r["text"] == " ".join(p["text"] for p in parts)
        assert r["duration"] == pytest.approx(sum(p["duration"] for p in parts) + sum(r["pauses"]))
        assert r["duration"] <= 12.0 and all(0.2 <= g <= 0.4 for g in r["pauses"])
    assert trainer.chain_voices(records, 0.0, 12.0, (0.2, 0.4), random.Random(0)) == records


def test_voice_change_example_audio_is_the_parts_with_pauses(tmp_path) -> None:
    _tiny_corpus(tmp_path)
    records = trainer.read_records([tmp_path / "corpus" / "train"])
    records[1]["voice"] = "other"
    cfg = trainer.TrainConfig(p_augment=0.0, p_voice_change=1.0, pause_seconds=(0.5, 0.5))
    joined = trainer.chain_voices(records, 1.0, 16.0, cfg.pause_seconds, random.Random(0))
    assert len(joined) == 1
    values, mask, labels = trainer.BatchDataset(joined, [[0]], cfg, seed=0)[0]
    assert values.shape == (1, 16000 + 8000 + 16000) and bool(mask.all())
    pause = values[0, 16000:24000]
    assert float(pause.abs().max()) < 0.01 * float(values[0].abs().max())
    text = trainer.decode_ids([i for x in labels[0].tolist() for i in (x, 0)])
    assert text == f"{joined[0]['parts'][0]['text']} {joined[0]['parts'][1]['text']}"


def test_export_keeps_the_word_lm_of_the_model_it_started_from(tmp_path) -> None:
    """An export of a run that started from a model with ``lm.arpa.gz`` carries that LM (the beam decoder's
    default), and an export without such a start has none."""
    cfg = trainer.TrainConfig(model=TINY)
    model = trainer.build_model(cfg)
    start = trainer.export(model, tmp_path / "start", cfg)
    assert not (start / "lm.arpa.gz").exists()
    (start / "lm.arpa.gz").write_bytes(b"stand-in for an ARPA file")
    cfg = trainer.TrainConfig(model=TINY, init_from=str(start))
    out = trainer.export(model, tmp_path / "continued", cfg)
    assert (out / "lm.arpa.gz").read_bytes() == b"stand-in for an ARPA file"


def test_init_from_starts_a_new_run_from_an_exported_model(tmp_path) -> None:
    _tiny_corpus(tmp_path)
    cfg = trainer.TrainConfig(model=TINY)
    source = trainer.build_model(cfg)
    trainer.export(source, tmp_path / "exported", cfg)
    cfg = trainer.TrainConfig(
        name="from-export",
        model=TINY,
        init_from=str(tmp_path / "exported"),
        batch_seconds=4.0,
        p_augment=0.0,
        num_workers=0,
        lr=1e-9,
        eval_every=10**9,
        threads=1,
    )
    out = trainer.train(cfg, tmp_path, max_steps_now=1, progress=False)
    trained = dict(out["model"].named_parameters())  # one step at lr 1e-9 (batch-norm statistics move)
    for key, value in source.named_parameters():
        assert torch.allclose(trained[key], value, atol=1e-6), key
    bad = trainer.TrainConfig(name="bad", model=TINY, init_from=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        trainer.train(bad, tmp_path, max_steps_now=1, progress=False)


def test_grown_model_starts_with_the_trained_models_output(tmp_path) -> None:
    """Fresh layers inserted by ``grow_layers_after`` leave the output as it was, then train."""
    _tiny_corpus(tmp_path)
    three = {**TINY, "num_hidden_layers": 3, "feat_extract_norm": "layer", "do_stable_layer_norm": True}
    cfg = trainer.TrainConfig(model=three)
    source = trainer.build_model(cfg).eval()
    torch.manual_seed(1)
    with torch.no_grad():  # trained-looking norms: the final-norm hand-over must carry them
        for name, value in source.named_parameters():
            if "norm" in name:
                value.add_(0.3 * torch.randn_like(value))
    trainer.export(source, tmp_path / "exported", cfg)
    grown_cfg = trainer.TrainConfig(
        name="grown",
        model={**three, "num_hidden_layers": 5},
        init_from=str(tmp_path / "exported"),
        grow_layers_after=[0, 2],
        batch_seconds=4.0,
        p_augment=0.0,
        num_workers=0,
        eval_every=10**9,
        threads=1,
    )
    grown = trainer.build_model(grown_cfg)
    trainer.start_from_export(grown, tmp_path / "exported", grown_cfg.grow_layers_after)
    x = torch.randn(2, 8000)
    with torch.no_grad():
        torch.testing.assert_close(grown.eval()(x).logits, source(x).logits, atol=1e-4, rtol=0)
    out = trainer.train(grown_cfg, tmp_path, max_steps_now=2, progress=False)
    inserted = out["model"].wav2vec2_conformer.encoder.layers[1]  # after old layer 0
    assert inserted.ffn1.output_dense.weight.abs().sum() > 0  # the silenced branches start to learn
    wrong = trainer.TrainConfig(model={**three, "num_hidden_layers": 4})
    with pytest.raises(ValueError, match="layers"):
        trainer.start_from_export(trainer.build_model(wrong), tmp_path / "exported", [0, 2])


def test_targets_use_todays_spelling_of_archaic_splits(tmp_path) -> None:
    """The corpus keeps its sources' "TO DAY"; the CTC targets (and scoring) say "TODAY", as the LM does."""
    from model.training.evaluation import error_rates

    _tiny_corpus(tmp_path)
    records = trainer.read_records([tmp_path / "corpus" / "train"])
    records[0]["text"] = "SEE YOU TO DAY"
    cfg = trainer.TrainConfig(p_augment=0.0, p_voice_change=0.0)
    _, _, labels = trainer.BatchDataset(records, [[0]], cfg, seed=0)[0]
    assert trainer.decode_ids([i for x in labels[0].tolist() for i in (x, 0)]) == "SEE YOU TODAY"
    assert error_rates(["SEE YOU TO DAY"], ["SEE YOU TODAY"])["wer"] == 0.0
    assert error_rates(["FROM DAY TO DAY"], ["FROM DAY TODAY"])["wer"] == 0.5  # meant as two words


def _consistency_batch(seconds: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = [int(s * 16000) for s in seconds]
    values = torch.zeros(len(lengths), max(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        values[i, :n] = torch.randn(n)
        mask[i, :n] = 1
    return values, mask


@pytest.mark.parametrize("target", ["distribution", "argmax"])
@pytest.mark.parametrize("layers", [0, 1])
def test_consistency_crops_line_up_with_the_whole_inputs_frames(layers: int, target: str) -> None:
    """Without encoder layers every frame sees only its own samples (layer-norm feature encoder, frame-wise
    projection; the positional convolution's reach stays inside the left-out edges), so an aligned crop
    reproduces the whole input's frames and the loss is ~0; one attention layer makes frames depend on
    context, and the loss is not."""
    torch.manual_seed(0)
    tiny = {**TINY, "num_hidden_layers": layers, "feat_extract_norm": "layer", "do_stable_layer_norm": True}
    cfg = trainer.TrainConfig(
        model=tiny,
        consistency_crop_seconds=(0.6, 0.9),
        consistency_renormalize=0.0,
        consistency_seconds=4.0,
        consistency_target=target,
    )
    model = trainer.build_model(cfg).eval()
    with torch.no_grad():  # peaked output distributions (a fresh head's are near uniform: KL ~ 0 anyway)
        model.lm_head.weight.mul_(100.0)
    values, mask = _consistency_batch([2.0, 1.3, 0.5])
    with torch.no_grad():
        logits = model(values, attention_mask=mask).logits
        losses = [
            float(trainer.context_consistency_loss(model, values, mask, logits, cfg, random.Random(seed)))
            for seed in range(5)
        ]
    if target == "argmax":
        # a crop that reproduces the whole input's frames scores -log p(its own arg-max) on each kept frame
        own = []
        for seed in range(5):
            crop, chosen, starts = trainer.choose_crops(mask.sum(-1).tolist(), 320, cfg, random.Random(seed))
            frames = model(values[:1, :crop]).logits.shape[1]  # a crop's frames
            edge = min(round(cfg.consistency_edge_s * 50), (frames - 1) // 2)
            best = logits.log_softmax(-1).max(-1).values  # (B, F)
            kept = [-best[i, s + edge : s + frames - edge] for i, s in zip(chosen, starts, strict=True)]
            own.append(float(torch.stack(kept).mean()))
        gap = max(abs(a - b) for a, b in zip(losses, own, strict=True))
        assert (gap < 1e-5) if layers == 0 else (gap > 1e-4), (losses, own)
    elif layers == 0:
        assert max(losses) < 1e-7, losses  # measured 0.0
    else:
        assert min(losses) > 1e-6, losses  # measured 2e-5 to 8e-5
    # nothing long enough to crop
    short_values, short_mask = _consistency_batch([0.5])
    with torch.no_grad():
        short_logits = model(short_values, attention_mask=short_mask).logits
    assert (
        trainer.context_consistency_loss(model, short_values, short_mask, short_logits, cfg, random.Random(0))
        is None
    )


def test_an_unknown_consistency_target_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="consistency_target"):
        trainer.TrainConfig(consistency_target="argmin")
    config = tmp_path / "bad.toml"
    config.write_text('name = "bad"\n[optim]\nconsistency_target = "argmin"\n')
    with pytest.raises(ValueError, match="consistency_target"):
        trainer.TrainConfig.from_toml(config)


def test_training_with_context_consistency_logs_and_lowers_it(tmp_path) -> None:
    _tiny_corpus(tmp_path)
    cfg = _quick_run_config(
        "tiny-consistency",
        {**TINY, "feat_extract_norm": "layer", "do_stable_layer_norm": True},
        consistency_weight=1.0,
        consistency_crop_seconds=(0.4, 0.6),
    )
    torch.manual_seed(0)
    out = trainer.train(cfg, tmp_path, max_steps_now=30, progress=False)
    log = _train_log(out)
    consistency = [r["consistency"] for r in log if "consistency" in r]
    assert len(consistency) == 30
    assert np.mean(consistency[-5:]) < np.mean(consistency[:5])
