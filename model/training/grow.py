"""Deepen a trained Wav2Vec2-Conformer by inserting Conformer layers that leave its output unchanged.

Why: the embedded model under-fits (6 layers of 144), and training a deeper one from scratch costs days
of 2-core CPU time. A deeper model that starts out computing exactly what the trained one computes keeps
everything learnt and only adds capacity.

How the inserted layer is made an identity. A Conformer layer adds four residual branches (half FFN,
self-attention, convolution, half FFN) to its input and ends in ``final_layer_norm``. The new layer's
branches get zero output projections (``ffn*.output_dense``, ``self_attn.linear_out``,
``conv_module.pointwise_conv2``), so they add nothing and the layer reduces to its ``final_layer_norm``.
The layer it follows hands over its own final norm: the old layer's ``final_layer_norm`` becomes the
plain normalization (weight 1, bias 0) and the new layer's takes the old weight and bias. A normalized
vector normalizes to itself (up to the epsilon), so the pair computes what the old layer did. Every other
weight of the new layer keeps its fresh random initialization; gradients reach it as soon as the zero
projections move.
"""

from __future__ import annotations

import re

import torch

LAYER_PREFIX = "wav2vec2_conformer.encoder.layers."
# parameters whose zeroing silences a new layer's residual branches
SILENCED = (
    "ffn1.output_dense.weight",
    "ffn1.output_dense.bias",
    "self_attn.linear_out.weight",
    "self_attn.linear_out.bias",
    "conv_module.pointwise_conv2.weight",
    "conv_module.pointwise_conv2.bias",
    "ffn2.output_dense.weight",
    "ffn2.output_dense.bias",
)
_LAYER_KEY = re.compile(re.escape(LAYER_PREFIX) + r"(\d+)\.(.+)")


def layer_map(old_layers: int, insert_after: list[int]) -> list[int]:
    """The new index of each old layer when a fresh layer goes right after each old layer listed in
    ``insert_after`` (the one inserted after old layer ``i`` is ``old_to_new[i] + 1``)."""
    bad = [i for i in insert_after if not 0 <= i < old_layers]
    if bad or len(set(insert_after)) != len(insert_after):
        raise ValueError(f"insert_after {insert_after} must name distinct layers of 0..{old_layers - 1}")
    return [i + sum(j < i for j in insert_after) for i in range(old_layers)]


def deepen_state_dict(
    trained: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor], insert_after: list[int]
) -> dict[str, torch.Tensor]:
    """The state dict of the deeper model: ``trained`` (the old model's weights) with a layer inserted
    after each of ``insert_after``, whose weights come from ``fresh`` (the deeper model's own random
    initialization) except for the identity-making ones (module docstring)."""
    old_layers = 1 + max(int(m.group(1)) for k in trained if (m := _LAYER_KEY.match(k)))
    new_layers = 1 + max(int(m.group(1)) for k in fresh if (m := _LAYER_KEY.match(k)))
    old_to_new = layer_map(old_layers, insert_after)
    inserted = {old_to_new[i] + 1: old_to_new[i] for i in insert_after}  # new layer -> the layer before it
    if new_layers != old_layers + len(insert_after):
        raise ValueError(
            f"the deeper model has {new_layers} layers; {old_layers} trained + {len(insert_after)} inserted "
            f"= {old_layers + len(insert_after)}"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in trained.items():
        m = _LAYER_KEY.match(key)
        out[key if m is None else f"{LAYER_PREFIX}{old_to_new[int(m.group(1))]}.{m.group(2)}"] = value.clone()
    for key, value in fresh.items():
        m = _LAYER_KEY.match(key)
        if m is None or int(m.group(1)) not in inserted:
            continue
        out[key] = torch.zeros_like(value) if m.group(2) in SILENCED else value.clone()
    for new, previous in inserted.items():
        before = f"{LAYER_PREFIX}{previous}.final_layer_norm."
        after = f"{LAYER_PREFIX}{new}.final_layer_norm."
        out[after + "weight"], out[after + "bias"] = out[before + "weight"], out[before + "bias"]
        out[before + "weight"] = torch.ones_like(out[after + "weight"])
        out[before + "bias"] = torch.zeros_like(out[after + "bias"])
    # layer keys only: the rest is the trained model's, whatever key form its checkpoint uses
    missing = {k for k in fresh if _LAYER_KEY.match(k)} - set(out)
    if missing:
        raise ValueError(f"deepened state lacks {sorted(missing)[:5]}")
    return out
