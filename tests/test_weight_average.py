"""``average-weights``: two exports of one architecture interpolate tensor by tensor into a loadable model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from model.training import trainer
from model.training.weight_average import average_state
from streamer.cli import main
from tests.test_training_trainer import TINY


def _export(directory, seed: int, **changes):
    torch.manual_seed(seed)
    cfg = trainer.TrainConfig(model={**TINY, **changes})
    return trainer.export(trainer.build_model(cfg), directory, cfg)


def test_the_average_is_the_interpolation_and_loads_as_a_model(tmp_path, capsys) -> None:
    first, second = _export(tmp_path / "a", 0), _export(tmp_path / "b", 1)
    out = tmp_path / "mix"
    assert main(["average-weights", str(first), str(second), "--weight", "0.25", "--out", str(out)]) == 0
    a, b, mix = (load_file(d / "model.safetensors") for d in (first, second, out))
    assert mix.keys() == a.keys()
    moved = [k for k in a if not torch.equal(a[k], b[k])]
    assert moved, "the two random models should differ"
    for k in moved:
        torch.testing.assert_close(mix[k], 0.75 * a[k] + 0.25 * b[k])
    assert json.loads((out / "config.json").read_text()) == json.loads((first / "config.json").read_text())
    from model import Wav2Vec2ConformerForCTC

    model = Wav2Vec2ConformerForCTC.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 8000)).logits
    assert torch.isfinite(logits).all()
    assert "0.75 x" in capsys.readouterr().out


def test_the_end_weights_give_back_each_model() -> None:
    a = {"w": torch.randn(3, 2), "steps": torch.tensor([4])}
    b = {"w": torch.randn(3, 2), "steps": torch.tensor([4])}
    assert torch.equal(average_state(a, b, 0.0)["w"], a["w"])
    assert torch.equal(average_state(a, b, 1.0)["w"], b["w"])


def test_models_that_do_not_match_are_refused(tmp_path, capsys) -> None:
    a = {"w": torch.randn(3, 2)}
    with pytest.raises(ValueError, match="shapes differ"):
        average_state(a, {"w": torch.randn(2, 3)}, 0.5)
    with pytest.raises(ValueError, match="different tensors"):
        average_state(a, {"v": torch.randn(3, 2)}, 0.5)
    with pytest.raises(ValueError, match="weight must be"):
        average_state(a, a, 1.5)
    with pytest.raises(ValueError, match="non-float"):
        average_state({"n": torch.tensor([1])}, {"n": torch.tensor([2])}, 0.5)
    counters = [{"bn.num_batches_tracked": torch.tensor(n)} for n in (3, 9)]
    assert average_state(*counters, 0.5)["bn.num_batches_tracked"] == 3
    first = _export(tmp_path / "a", 0)
    second = _export(tmp_path / "b", 0, intermediate_size=64)
    assert main(["average-weights", str(first), str(second), "--out", str(tmp_path / "mix")]) == 2
    assert "config.json differ" in capsys.readouterr().err
