"""The CPU fast path (model.cpu_fast_path): oneDNN-packed dense layers keep transformers parity, leave
checkpoints, training and int8 conversion unchanged, and fall back to plain kernels without oneDNN."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from test_model_parity import compare_outputs, make_pair, padded_batch

import model as ours_lib
from model import cpu_fast_path
from model.cpu_fast_path import PackedLinear, PackedPointwiseConv1d, route_linears, unroute_linears
from model.quantize import quantize_dynamic_int8, resolve_dtype

transformers = pytest.importorskip("transformers")
needs_onednn = pytest.mark.skipif(
    not cpu_fast_path.onednn_linear_available(), reason="torch built without a usable oneDNN"
)


def packed_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if isinstance(m, PackedLinear | PackedPointwiseConv1d)]


@needs_onednn
@pytest.mark.parametrize("position", [None, "relative", "rotary"], ids=str)
@pytest.mark.parametrize("head", ["Wav2Vec2ConformerForCTC", "Wav2Vec2ConformerForXVector"])
def test_packed_route_keeps_parity(head: str, position: str | None, tiny_model_kwargs: dict) -> None:
    kwargs = {**tiny_model_kwargs, "feat_extract_norm": "layer", "do_stable_layer_norm": True}
    reference, ours = make_pair(head, {**kwargs, "position_embeddings_type": position})
    assert route_linears(ours, "onednn") == "onednn"
    assert packed_modules(ours), "no dense layer was routed"
    assert all(m._packed is not None for m in packed_modules(ours)), "weights not packed at routing time"
    input_values, attention_mask = padded_batch()
    with torch.inference_mode():
        expected = reference(input_values, attention_mask=attention_mask, output_hidden_states=True)
        actual = ours(input_values, attention_mask=attention_mask, output_hidden_states=True)
    assert "hidden_states" in compare_outputs(expected, actual)


@needs_onednn
def test_packed_kernel_is_what_runs(tiny_model_kwargs: dict) -> None:
    """Corrupting the packed copy must change the output: the fast path is not silently bypassed."""
    _, ours = make_pair("Wav2Vec2ConformerForCTC", tiny_model_kwargs)
    route_linears(ours, "onednn")
    inputs = padded_batch()[0]
    with torch.inference_mode():
        before = ours(inputs).logits
        head = ours.lm_head
        key, _ = head._packed
        head._packed = (key, torch.ops.mkldnn._reorder_linear_weight(torch.zeros_like(head.weight)))
        after = ours(inputs).logits
    assert torch.allclose(after, head.bias.expand_as(after))
    assert not torch.allclose(before, after)


def test_from_pretrained_routes_and_keeps_parity(tmp_path, tiny_model_kwargs: dict) -> None:
    """The public API: a transformers checkpoint loads onto the fastest route and still matches it."""
    kwargs = {**tiny_model_kwargs, "position_embeddings_type": "relative"}
    reference, _ = make_pair("Wav2Vec2ConformerForCTC", kwargs)
    reference.save_pretrained(tmp_path)
    ours = ours_lib.Wav2Vec2ConformerForCTC.from_pretrained(tmp_path)
    assert ours.linear_route in ("onednn", "aten")
    assert bool(packed_modules(ours)) == (ours.linear_route == "onednn")
    input_values, attention_mask = padded_batch()
    with torch.inference_mode():
        expected = reference(input_values, attention_mask=attention_mask)
        actual = ours(input_values, attention_mask=attention_mask)
    compare_outputs(expected, actual)
    # the checkpoint a routed model writes is the one it read
    saved = {k: v for k, v in ours.state_dict().items()}
    for key, value in reference.state_dict().items():
        if key in saved:
            assert torch.equal(saved[key].reshape(value.shape), value), key


def test_falls_back_cleanly_without_onednn(monkeypatch, tmp_path, tiny_model_kwargs: dict, caplog) -> None:
    reference, _ = make_pair("Wav2Vec2ConformerForCTC", tiny_model_kwargs)
    reference.save_pretrained(tmp_path)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not cpu_fast_path.onednn_linear_available()
    auto = ours_lib.Wav2Vec2ConformerForCTC.from_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="model.cpu_fast_path"):
        forced = ours_lib.Wav2Vec2ConformerForCTC.from_pretrained(tmp_path, linear_route="onednn")
    assert "stay on aten" in caplog.text
    input_values, attention_mask = padded_batch()
    for ours in (auto, forced):
        assert ours.linear_route == "aten" and not packed_modules(ours)
        with torch.inference_mode():
            compare_outputs(
                reference(input_values, attention_mask=attention_mask),
                ours(input_values, attention_mask=attention_mask),
            )


@needs_onednn
def test_packed_layers_fall_back_when_onednn_goes_away(monkeypatch, tiny_model_kwargs: dict) -> None:
    """A model routed while oneDNN was usable still runs (on aten) if the check later says no."""
    reference, ours = make_pair("Wav2Vec2ConformerForCTC", tiny_model_kwargs)
    route_linears(ours, "onednn")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    with torch.inference_mode():
        assert all(m._packed_weight(torch.zeros(1, m.in_features)) is None for m in packed_modules(ours))
        compare_outputs(reference(padded_batch()[0]), ours(padded_batch()[0]))


def test_unknown_route_is_an_error(tiny_model_kwargs: dict) -> None:
    _, ours = make_pair("Wav2Vec2ConformerForCTC", tiny_model_kwargs)
    with pytest.raises(ValueError, match="linear_route"):
        route_linears(ours, "fast")


@needs_onednn
def test_training_and_weight_updates_bypass_stale_packs(tiny_model_kwargs: dict) -> None:
    """Training runs on the dense weights with gradients; the next inference repacks the new weights."""
    _, ours = make_pair("Wav2Vec2ConformerForCTC", tiny_model_kwargs)
    plain = copy.deepcopy(ours)
    route_linears(ours, "onednn")
    inputs = padded_batch()[0]
    ours.train()
    ours.lm_head(torch.randn(2, ours.lm_head.in_features)).sum().backward()
    assert ours.lm_head.weight.grad is not None
    with torch.no_grad():
        for model in (ours, plain):
            for parameter in model.parameters():
                parameter.mul_(0.5)
    ours.eval()
    with torch.inference_mode():
        compare_outputs(plain(inputs), ours(inputs))


@needs_onednn
def test_copies_int8_and_bf16_of_a_routed_model(tiny_model_kwargs: dict) -> None:
    reference, ours = make_pair("Wav2Vec2ConformerForCTC", {**tiny_model_kwargs, "num_hidden_layers": 3})
    route_linears(ours, "onednn")
    inputs = padded_batch()[0]
    with torch.inference_mode():
        expected = reference(inputs).logits
        clone = copy.deepcopy(ours)
        assert torch.allclose(clone(inputs).logits, expected, atol=1e-4)
        int8 = quantize_dynamic_int8(ours)
        # the float edge layers and the head stay packed; the quantized ones are int8 modules
        assert isinstance(int8.lm_head, PackedLinear)
        assert isinstance(int8.wav2vec2_conformer.encoder.layers[0].ffn1.intermediate_dense, PackedLinear)
        middle = int8.wav2vec2_conformer.encoder.layers[1].ffn1.intermediate_dense
        assert "quantized" in type(middle).__module__
        assert (int8(inputs).logits - expected).abs().max() < 0.5
        bf16 = copy.deepcopy(ours).to(torch.bfloat16)
        drift = (bf16(inputs.bfloat16()).logits.float() - expected).abs().max()
        assert drift < 0.5
    unroute_linears(ours)
    assert not packed_modules(ours)


def test_auto_dtype_follows_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(
        cpu_fast_path, "cpu_features", lambda: {"onednn_bf16": True, "avx512_bf16": True, "amx": False}
    )
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(
        cpu_fast_path, "cpu_features", lambda: {"onednn_bf16": True, "avx512_bf16": False, "amx": False}
    )
    assert resolve_dtype("auto", "cpu") == "float32"  # avx512 without bf16 units: emulated, slower
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_dtype("float16", "cpu")
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("half", "cpu")
