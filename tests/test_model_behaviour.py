"""Behaviour that parity tests do not cover: outputs API, freezing, training-only randomness, int8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import model as ours_lib
from model.attention import skew_relative_scores
from model.quantize import prepare_for_inference


def _ctc(tiny_model_kwargs: dict, **overrides: object) -> ours_lib.Wav2Vec2ConformerForCTC:
    torch.manual_seed(0)
    return ours_lib.Wav2Vec2ConformerForCTC(
        ours_lib.Wav2Vec2ConformerConfig(**{**tiny_model_kwargs, **overrides})
    )


def test_outputs_support_attribute_key_and_index_access(tiny_model_kwargs: dict) -> None:
    model = _ctc(tiny_model_kwargs).eval()
    out = model(torch.randn(2, 400), labels=torch.tensor([[3, 4], [5, -100]]))
    assert out["logits"] is out.logits and out[1] is out.logits and out[0] is out.loss
    assert out.keys() == ["loss", "logits"] and "hidden_states" not in out
    loss, logits = out.to_tuple()
    assert logits.shape == (2, 19, 12) and loss.ndim == 0


def test_skew_matches_explicit_relative_indexing() -> None:
    length = 7
    scores = torch.randn(2, 3, length, 2 * length - 1)
    skewed = skew_relative_scores(scores)
    i, j = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
    expected = scores[:, :, i, length - 1 - i + j]
    assert torch.equal(skewed, expected)


def test_freeze_feature_encoder_stops_its_gradients(tiny_model_kwargs: dict) -> None:
    model = _ctc(tiny_model_kwargs, mask_time_prob=0.0)
    model.freeze_feature_encoder()
    model(torch.randn(2, 400), labels=torch.tensor([[3, 4], [5, 6]])).loss.backward()
    assert all(p.grad is None for p in model.wav2vec2_conformer.feature_extractor.parameters())
    assert model.lm_head.weight.grad is not None
    assert model.wav2vec2_conformer.feature_projection.projection.weight.grad is not None


def test_layerdrop_and_spec_augment_only_in_training(tiny_model_kwargs: dict) -> None:
    model = _ctc(
        tiny_model_kwargs, layerdrop=0.5, mask_time_prob=0.5, mask_time_length=2, mask_feature_prob=0.3
    )
    audio = torch.randn(1, 400)
    model.eval()
    assert torch.equal(model(audio).logits, model(audio).logits)
    model.train()
    torch.manual_seed(1)
    np.random.seed(1)
    layer_counts = {
        len(model.wav2vec2_conformer(audio, output_hidden_states=True).hidden_states) - 1 for _ in range(20)
    }
    assert len(layer_counts) > 1  # some layers were dropped in some passes
    base = model.wav2vec2_conformer
    masked = base._mask_hidden_states(torch.full((1, 19, 32), 7.0))
    is_embed = masked == base.masked_spec_embed
    assert is_embed.float().mean(-1).max() > 0.5  # time spans replaced by the learned vector
    assert ((masked == 0).all(1)).any()  # feature bands zeroed over all frames


def test_weight_initialisation_is_sane(tiny_model_kwargs: dict) -> None:
    model = ours_lib.Wav2Vec2ConformerForPreTraining(ours_lib.Wav2Vec2ConformerConfig(**tiny_model_kwargs))
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
    assert model.quantizer.weight_proj.weight.std() > 0.5  # N(0, 1), not the generic N(0, 0.02)
    linear = model.wav2vec2_conformer.encoder.layers[0].ffn1.intermediate_dense.weight
    assert 0.01 < linear.std() < 0.03


@pytest.mark.parametrize("engine", [None, "x86"], ids=["preferred", "x86"])
def test_int8_dynamic_quantization_stays_close(engine: str | None, tiny_model_kwargs: dict) -> None:
    model = _ctc(tiny_model_kwargs, position_embeddings_type="relative").eval()
    engine_before = torch.backends.quantized.engine
    quantized = ours_lib.quantize_dynamic_int8(model, engine=engine)
    assert torch.backends.quantized.engine == engine_before
    assert quantized is not model
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    assert type(quantized.lm_head) is torch.nn.Linear  # the last layer (head) and the first stay float
    assert type(quantized.wav2vec2_conformer.feature_projection.projection) is torch.nn.Linear
    pointwise = quantized.wav2vec2_conformer.encoder.layers[0].conv_module.pointwise_conv1
    assert isinstance(pointwise, dynamic_linear)
    assert pointwise.weight().qscheme() == torch.per_channel_affine
    audio = torch.randn(2, 400, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(audio).logits
        actual = quantized(audio).logits
    assert (actual - expected).abs().max() < 0.05 * expected.abs().max()
    assert type(model.lm_head) is torch.nn.Linear  # the original is untouched


def test_int8_keeps_the_edge_conformer_layers_float(tiny_model_kwargs: dict) -> None:
    model = _ctc({**tiny_model_kwargs, "num_hidden_layers": 4}).eval()
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear

    def int8_layers(quantized: torch.nn.Module) -> list[bool]:
        layers = quantized.wav2vec2_conformer.encoder.layers
        return [isinstance(layer.ffn1.intermediate_dense, dynamic_linear) for layer in layers]

    assert int8_layers(ours_lib.quantize_dynamic_int8(model)) == [False, True, True, False]
    assert int8_layers(ours_lib.quantize_dynamic_int8(model, float_edge_layers=0)) == [True] * 4
    assert int8_layers(ours_lib.quantize_dynamic_int8(model, float_edge_layers=2)) == [True] * 4  # none left


def test_prepare_for_inference_precisions(tiny_model_kwargs: dict) -> None:
    model = _ctc(tiny_model_kwargs)
    with pytest.raises(ValueError, match="CUDA"):
        prepare_for_inference(model, "float16", "cpu")
    bf16 = prepare_for_inference(model, "bfloat16", "cpu")
    assert bf16.dtype == torch.bfloat16 and not bf16.training
    with torch.no_grad():
        assert bf16(torch.randn(1, 400, dtype=torch.bfloat16)).logits.dtype == torch.bfloat16
