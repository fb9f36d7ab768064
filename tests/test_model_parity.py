"""Numerical parity with transformers' Wav2Vec2-Conformer on tiny random models.

Every head x position-embedding type x normalisation variant, padded batch, eval mode: every output
field must match within 1e-4. The reference weights are randomised (not left at their init values, where
e.g. zero biases or unit norms could hide a wrong formula) and copied into our model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import model as ours_lib

transformers = pytest.importorskip("transformers")

HEADS = [
    "Wav2Vec2ConformerModel",
    "Wav2Vec2ConformerForCTC",
    "Wav2Vec2ConformerForSequenceClassification",
    "Wav2Vec2ConformerForAudioFrameClassification",
    "Wav2Vec2ConformerForXVector",
    "Wav2Vec2ConformerForPreTraining",
]
POSITIONS = [None, "relative", "rotary"]
VARIANTS = {
    "group": {"feat_extract_norm": "group"},
    "layer": {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
}
TOLERANCE = 1e-4


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere, including norms, biases and BatchNorm statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point() or name.endswith(("inv_freq", ".pe")):
                continue
            if "running_var" in name or "norm.weight" in name:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)


def make_pair(
    head: str, kwargs: dict[str, Any], eager: bool = True
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformers model, our model) with identical random weights, in eval mode."""
    reference_config = transformers.Wav2Vec2ConformerConfig(**kwargs)
    if eager:
        reference_config._attn_implementation = "eager"
    reference = getattr(transformers, head)(reference_config).eval()
    randomize_(reference)
    ours = getattr(ours_lib, head)(ours_lib.Wav2Vec2ConformerConfig(**kwargs)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three utterances of 400, 280 and 180 samples (19, 12 and 8 frames), right-padded with zeros."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [400, 280, 180]
    attention_mask = (torch.arange(400)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_values = torch.randn(3, 400, generator=generator) * attention_mask
    return input_values, attention_mask


def assert_close(expected: Any, actual: Any, name: str) -> None:
    if isinstance(expected, tuple | list):
        assert isinstance(actual, tuple | list) and len(actual) == len(expected), f"{name}: lengths differ"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_close(e, a, f"{name}[{i}]")
        return
    assert actual is not None, f"{name}: missing"
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= TOLERANCE, f"{name}: max abs diff {diff:.3g}"


def compare_outputs(expected: Any, actual: Any) -> list[str]:
    compared = []
    for name, value in expected.items():
        if value is None:
            continue
        assert_close(value, getattr(actual, name), name)
        compared.append(name)
    return compared


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("position", POSITIONS, ids=str)
@pytest.mark.parametrize("head", HEADS)
def test_eval_outputs_match(head: str, position: str | None, variant: str, tiny_model_kwargs: dict) -> None:
    kwargs = {**tiny_model_kwargs, **VARIANTS[variant], "position_embeddings_type": position}
    reference, ours = make_pair(head, kwargs)
    input_values, attention_mask = padded_batch()
    extra: dict[str, Any] = {}
    if head == "Wav2Vec2ConformerForPreTraining":
        mask = ours_lib.compute_mask_indices((3, 19), 0.3, 2, min_masks=2)
        extra["mask_time_indices"] = torch.from_numpy(mask)
    with torch.no_grad():
        expected = reference(
            input_values,
            attention_mask=attention_mask,
            output_hidden_states=True,
            output_attentions=True,
            **extra,
        )
        actual = ours(
            input_values,
            attention_mask=attention_mask,
            output_hidden_states=True,
            output_attentions=True,
            **extra,
        )
    compared = compare_outputs(expected, actual)
    assert "hidden_states" in compared and "attentions" in compared
    assert len(compared) >= 3


@pytest.mark.parametrize("position", POSITIONS, ids=str)
def test_sdpa_path_matches_reference_without_mask(position: str | None, tiny_model_kwargs: dict) -> None:
    """The unpadded fast path (no attention mask at all) against transformers' default SDPA path."""
    reference, ours = make_pair(
        "Wav2Vec2ConformerForCTC", {**tiny_model_kwargs, "position_embeddings_type": position}, eager=False
    )
    input_values, _ = padded_batch(seed=1)
    with torch.no_grad():
        assert_close(reference(input_values).logits, ours(input_values).logits, "logits")


def _train_mode_kwargs(tiny_model_kwargs: dict, position: str) -> dict:
    """Deterministic training: no dropout or LayerDrop; SpecAugment stays on (seeded numpy masks)."""
    return {
        **tiny_model_kwargs,
        "position_embeddings_type": position,
        "hidden_dropout": 0.0,
        "activation_dropout": 0.0,
        "attention_dropout": 0.0,
        "final_dropout": 0.0,
        "conformer_conv_dropout": 0.0,
        "layerdrop": 0.0,
        "mask_time_prob": 0.3,
        "mask_time_length": 2,
        "mask_feature_prob": 0.2,
        "mask_feature_length": 3,
        "ctc_loss_reduction": "mean",
    }


def _labels(head: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    if head == "Wav2Vec2ConformerForCTC":
        labels = torch.randint(3, 12, (3, 5), generator=generator)
        labels[1, 3:] = -100
        labels[2, 2:] = -100
        return labels
    if head == "Wav2Vec2ConformerForAudioFrameClassification":
        return torch.nn.functional.one_hot(torch.randint(0, 3, (3, 19), generator=generator), 3)
    return torch.randint(0, 3, (3,), generator=generator)


@pytest.mark.parametrize("position", ["relative", "rotary"])
@pytest.mark.parametrize(
    "head",
    [
        "Wav2Vec2ConformerForCTC",
        "Wav2Vec2ConformerForSequenceClassification",
        "Wav2Vec2ConformerForAudioFrameClassification",
        "Wav2Vec2ConformerForXVector",
    ],
)
def test_training_losses_and_gradients_match(head: str, position: str, tiny_model_kwargs: dict) -> None:
    reference, ours = make_pair(head, _train_mode_kwargs(tiny_model_kwargs, position))
    reference.train()
    ours.train()
    input_values, attention_mask = padded_batch()
    labels = _labels(head)
    losses = []
    for model in (reference, ours):
        np.random.seed(7)  # same SpecAugment masks for both
        loss = model(input_values, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        losses.append(loss)
    assert torch.isfinite(losses[0])
    assert_close(losses[0], losses[1], "loss")
    reference_grads = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        if param.grad is None:
            assert reference_grads[name].grad is None, name
            continue
        expected = reference_grads[name].grad
        assert_close(expected.view(param.grad.shape), param.grad, f"grad {name}")


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_pretraining_loss_matches(train: bool, tiny_model_kwargs: dict) -> None:
    kwargs = _train_mode_kwargs(tiny_model_kwargs, "relative")
    reference, ours = make_pair("Wav2Vec2ConformerForPreTraining", kwargs)
    input_values, attention_mask = padded_batch()
    frame_mask = ours._get_feature_vector_attention_mask(19, attention_mask)
    np.random.seed(11)
    mask = ours_lib.compute_mask_indices((3, 19), 0.4, 2, attention_mask=frame_mask, min_masks=2)
    negatives = ours_lib.sample_negative_indices((3, 19), 4, mask)
    inputs = {
        "attention_mask": attention_mask,
        "mask_time_indices": torch.from_numpy(mask),
        "sampled_negative_indices": torch.from_numpy(negatives),
    }
    outputs = []
    for model in (reference, ours):
        model.train(train)
        torch.manual_seed(5)  # same Gumbel noise
        np.random.seed(5)  # same SpecAugment feature masks
        outputs.append(model(input_values, **inputs))
    assert torch.isfinite(outputs[0].loss)
    for name in ("loss", "contrastive_loss", "diversity_loss", "codevector_perplexity", "projected_states"):
        assert_close(getattr(outputs[0], name), getattr(outputs[1], name), name)


def test_mask_and_negative_sampling_match_transformers() -> None:
    from transformers.models.wav2vec2.modeling_wav2vec2 import _sample_negative_indices
    from transformers.models.wav2vec2_conformer import modeling_wav2vec2_conformer as reference

    attention_mask = torch.ones(4, 50, dtype=torch.long)
    attention_mask[1, 30:] = 0
    attention_mask[3, 12:] = 0
    for seed, (prob, length, min_masks) in enumerate([(0.3, 3, 2), (0.65, 10, 0), (0.05, 2, 5)]):
        np.random.seed(seed)
        expected = reference._compute_mask_indices((4, 50), prob, length, attention_mask, min_masks)
        np.random.seed(seed)
        actual = ours_lib.compute_mask_indices((4, 50), prob, length, attention_mask, min_masks)
        np.testing.assert_array_equal(actual, expected)
        assert actual.any()
        np.random.seed(seed)
        expected_negatives = _sample_negative_indices((4, 50), 6, expected)
        np.random.seed(seed)
        actual_negatives = ours_lib.sample_negative_indices((4, 50), 6, actual)
        np.testing.assert_array_equal(actual_negatives, expected_negatives)


@pytest.mark.parametrize(
    ("head", "options"),
    [
        ("Wav2Vec2ConformerModel", {"add_adapter": True, "adapter_stride": 2, "num_adapter_layers": 2}),
        ("Wav2Vec2ConformerForCTC", {"add_adapter": True, "output_hidden_size": 24, "num_adapter_layers": 1}),
        ("Wav2Vec2ConformerForSequenceClassification", {"use_weighted_layer_sum": True}),
        ("Wav2Vec2ConformerForAudioFrameClassification", {"use_weighted_layer_sum": True}),
        ("Wav2Vec2ConformerForXVector", {"use_weighted_layer_sum": True}),
        (
            "Wav2Vec2ConformerForCTC",
            {"conv_bias": True, "feat_extract_activation": "gelu_new", "hidden_act": "swish"},
        ),
        (
            "Wav2Vec2ConformerForCTC",
            {"feat_extract_norm": "layer", "conv_bias": True, "feat_extract_activation": "relu"},
        ),
    ],
)
def test_options_match(head: str, options: dict, tiny_model_kwargs: dict) -> None:
    reference, ours = make_pair(head, {**tiny_model_kwargs, **options})
    input_values, attention_mask = padded_batch()
    with torch.no_grad():
        expected = reference(input_values, attention_mask=attention_mask)
        actual = ours(input_values, attention_mask=attention_mask)
    assert compare_outputs(expected, actual)
