"""One utterance per available TTS engine, post-processed to 16 kHz mono with a noise floor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from model.training import augment, synthesis

VOICES = {"espeak": "mix", "flite": "kal16", "festival": "kal_diphone", "piper": "joe"}


@pytest.mark.parametrize("engine", ["espeak", "flite", "festival", "piper"])
def test_one_utterance_per_engine(engine: str, tmp_path) -> None:
    voice = VOICES[engine]
    if not synthesis.voice_available(engine, voice):
        pytest.skip(
            f"{engine} voice {voice} not installed: {synthesis.voice_package(engine, voice)} (scripts/setup.sh train)"
        )
    uid = f"{engine}-{voice}-000000"
    job = synthesis.Job(
        uid,
        engine,
        voice,
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
        synthesis.draw_params(engine, voice, uid),
    )
    n = synthesis.run_batch(synthesis.Batch(f"{engine}-test", engine, voice, [job]), tmp_path)
    assert n == 1
    rec = json.loads((tmp_path / "shards" / f"{engine}-test.jsonl").read_text())
    audio, rate = sf.read(tmp_path / rec["path"])
    assert rate == 16000 and audio.ndim == 1
    assert 1.0 < len(audio) / rate < 8.0
    assert np.count_nonzero(audio == 0) < 0.2 * len(audio)  # no digital-zero silence
    assert rec["engine"] == engine and rec["text"].startswith("THE QUICK")


def test_voice_gate_names_the_package_and_checks_the_exact_voice() -> None:
    """Festival installs without any voice (its voices are separate Debian packages): an engine test must
    be gated on the voice it uses, not on the engine."""
    assert synthesis.voice_package("festival", "kal_diphone") == "festvox-kallpc16k"
    assert synthesis.voice_package("festival", "cmu_us_slt_arctic_hts") == "festvox-us-slt-hts"
    assert synthesis.voice_package("flite", "rms") == "flite"
    if "flite" not in synthesis.available_engines():
        pytest.skip("flite not installed")
    assert synthesis.voice_available("flite", "kal16") and synthesis.voice_available("flite", "rms")
    assert not synthesis.voice_available("flite", "no_such_voice")
    assert not synthesis.voice_available("festival", "no_such_voice")


def test_eval_voices_never_in_training_plan() -> None:
    batches = synthesis.plan_train(
        ["HELLO THERE MY FRIEND"] * 50, dict(synthesis.TRAIN_VOICES), hours_scale=0.01
    )
    keys = {f"{b.engine}:{b.voice}" for b in batches}
    assert not keys & synthesis.HELD_OUT
    with pytest.raises(ValueError):
        synthesis.plan_train(["X"], {"flite:rms": 1.0})


def test_dev_plan_uses_training_voices_only_in_turn() -> None:
    texts = [f"DEVELOPMENT SENTENCE {i}" for i in range(12)]
    batches = synthesis.plan_eval(texts, voices=synthesis.DEV_VOICES, prefix="dev")
    jobs = sorted((j for b in batches for j in b.jobs), key=lambda j: j.id[-5:])
    assert [j.text for j in jobs] == texts
    assert {f"{j.engine}:{j.voice}" for j in jobs} == set(synthesis.DEV_VOICES)
    assert set(synthesis.DEV_VOICES) <= set(synthesis.TRAIN_VOICES)
    assert not set(synthesis.DEV_VOICES) & synthesis.HELD_OUT
    assert all(j.id.startswith("dev-") and b.id.startswith("dev-") for b in batches for j in b.jobs)
    assert [f"{j.engine}:{j.voice}" for j in jobs[:6]] == synthesis.DEV_VOICES


def test_plan_prefix_is_stable() -> None:
    texts = [f"SENTENCE NUMBER {i} IS HERE" for i in range(500)]
    small = synthesis.plan_train(texts, {"flite:kal16": 0.05})
    big = synthesis.plan_train(texts, {"flite:kal16": 0.1})
    assert [j.text for b in small for j in b.jobs] == [j.text for b in big for j in b.jobs][
        : sum(len(b.jobs) for b in small)
    ]


def test_augment_keeps_length_range_and_level() -> None:
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(16000) * 0.05).astype(np.float32) * 0.5
    for _ in range(20):
        y = augment.augment(x, rng)
        assert y.dtype == np.float32
        assert 0.85 * len(x) < len(y) < 1.2 * len(x)
        assert np.abs(y).max() <= 1.0 and np.isfinite(y).all()
        assert np.count_nonzero(y == 0) < 10
