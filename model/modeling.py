"""Base class shared by every Wav2Vec2-Conformer model, and the bare encoder `Wav2Vec2ConformerModel`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import nn

from model.checkpoint import load_model, save_model
from model.configuration import Wav2Vec2ConformerConfig
from model.conformer import ConformerEncoder, PointwiseConv1d
from model.feature_encoder import Adapter, FeatureEncoder, FeatureProjection, conv_output_lengths
from model.masking import compute_mask_indices, frame_padding_mask
from model.outputs import Wav2Vec2BaseModelOutput
from model.positional import PositionalConvEmbedding


class Wav2Vec2ConformerPreTrainedModel(nn.Module):
    """Config handling, weight initialisation, length arithmetic and checkpoint I/O for all models."""

    config_class: ClassVar[type[Wav2Vec2ConformerConfig]] = Wav2Vec2ConformerConfig
    base_model_prefix: ClassVar[str] = "wav2vec2_conformer"
    main_input_name: ClassVar[str] = "input_values"

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        self.config = config

    # Initialisation -------------------------------------------------------------------------------

    def post_init(self) -> None:
        """Initialise every weight (called at the end of each concrete `__init__`)."""
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """Same distributions as the reference implementation, so training from scratch behaves alike.

        `nn.Module.apply` visits children before parents, so a module's own `init_weights()` (e.g. the
        quantizer's) runs last and can override the generic per-layer defaults.
        """
        std = self.config.initializer_range
        if isinstance(module, PositionalConvEmbedding):
            conv = module.conv
            weight = torch.empty_like(conv.parametrizations.weight.original1)
            nn.init.normal_(weight, 0.0, 2 * math.sqrt(1 / (conv.kernel_size[0] * conv.in_channels)))
            with torch.no_grad():
                conv.weight = weight  # the weight-norm parametrization splits it into g and v
            nn.init.zeros_(conv.bias)
        elif isinstance(module, FeatureProjection):
            bound = math.sqrt(1 / module.projection.in_features)
            nn.init.uniform_(module.projection.weight, -bound, bound)
            nn.init.uniform_(module.projection.bias, -bound, bound)
        elif isinstance(module, PointwiseConv1d):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm | nn.GroupNorm | nn.BatchNorm1d):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d) and not hasattr(module, "parametrizations"):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                bound = math.sqrt(module.groups / (module.in_channels * module.kernel_size[0]))
                nn.init.uniform_(module.bias, -bound, bound)
        init_extra = getattr(module, "init_weights", None)
        if callable(init_extra):
            init_extra()

    # Length arithmetic ----------------------------------------------------------------------------

    def _get_feat_extract_output_lengths(
        self, input_lengths: torch.Tensor | int, add_adapter: bool | None = None
    ) -> torch.Tensor | int:
        """Encoder frames produced from `input_lengths` audio samples (after the adapter if any)."""
        config = self.config
        add_adapter = config.add_adapter if add_adapter is None else add_adapter
        lengths = conv_output_lengths(input_lengths, config.conv_kernel, config.conv_stride)
        if add_adapter:
            n = config.num_adapter_layers
            lengths = conv_output_lengths(lengths, (1,) * n, (config.adapter_stride,) * n)
        return lengths

    def _get_feature_vector_attention_mask(
        self, feature_vector_length: int, attention_mask: torch.Tensor, add_adapter: bool | None = None
    ) -> torch.Tensor:
        """Sample-level attention mask (B, samples) -> frame-level bool mask (B, frames)."""
        lengths = self._get_feat_extract_output_lengths(attention_mask.sum(-1), add_adapter=add_adapter)
        return frame_padding_mask(lengths.to(torch.long), feature_vector_length)

    # Conveniences ---------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.parameters() if p.is_floating_point()).dtype

    def freeze_feature_encoder(self) -> None:
        """Stop gradients into the convolutional front end (standard when fine-tuning)."""
        self.base_model.feature_extractor.freeze()

    @property
    def base_model(self) -> Wav2Vec2ConformerModel:
        return getattr(self, self.base_model_prefix, self)  # type: ignore[return-value]

    # Checkpoints ----------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        dir_or_id: str | Path,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        strict: bool = False,
        linear_route: str = "auto",
        **config_overrides: Any,
    ) -> Self:
        """Load config + weights from a directory or a hub id in the local HF cache (see model.checkpoint).

        `linear_route` picks the CPU kernels of the dense layers: "auto" (fastest measured here),
        "onednn" (prepacked oneDNN weights) or "aten" (plain `nn.Linear`); see `model.cpu_fast_path`.
        """
        return load_model(
            cls,
            dir_or_id,
            dtype=dtype,
            device=device,
            strict=strict,
            linear_route=linear_route,
            **config_overrides,
        )

    def save_pretrained(self, directory: str | Path) -> None:
        """Write `config.json` and `model.safetensors` in the layout transformers reads."""
        save_model(self, directory)


class Wav2Vec2ConformerModel(Wav2Vec2ConformerPreTrainedModel):
    """Feature encoder + projection + SpecAugment + Conformer encoder (+ adapter): the bare encoder."""

    def __init__(self, config: Wav2Vec2ConformerConfig, *, initialize: bool = True) -> None:
        """`initialize=False` is for heads, which initialise the whole model once at the end."""
        super().__init__(config)
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config)
        if config.mask_time_prob > 0.0 or config.mask_feature_prob > 0.0:
            self.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size))
        self.encoder = ConformerEncoder(config)
        self.adapter = Adapter(config) if config.add_adapter else None
        if initialize:
            self.post_init()

    def init_weights(self) -> None:
        if hasattr(self, "masked_spec_embed"):
            nn.init.uniform_(self.masked_spec_embed)

    def _mask_hidden_states(
        self,
        hidden_states: torch.Tensor,
        mask_time_indices: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """SpecAugment: replace time spans by a learned vector and zero feature bands.

        Explicit `mask_time_indices` are applied in any mode (pre-training passes them); random masks are
        drawn only in training.
        """
        if not self.config.apply_spec_augment:
            return hidden_states
        config = self.config
        batch, length, width = hidden_states.shape
        if mask_time_indices is None and config.mask_time_prob > 0 and self.training:
            mask_time_indices = torch.from_numpy(
                compute_mask_indices(
                    (batch, length),
                    mask_prob=config.mask_time_prob,
                    mask_length=config.mask_time_length,
                    attention_mask=frame_mask,
                    min_masks=config.mask_time_min_masks,
                )
            ).to(hidden_states.device)
        if mask_time_indices is not None:
            embed = self.masked_spec_embed.to(hidden_states.dtype)
            hidden_states = torch.where(mask_time_indices.bool()[..., None], embed, hidden_states)
        if config.mask_feature_prob > 0 and self.training:
            mask_feature_indices = torch.from_numpy(
                compute_mask_indices(
                    (batch, width),
                    mask_prob=config.mask_feature_prob,
                    mask_length=config.mask_feature_length,
                    min_masks=config.mask_feature_min_masks,
                )
            ).to(hidden_states.device)
            hidden_states = hidden_states.masked_fill(mask_feature_indices[:, None, :], 0.0)
        return hidden_states

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> Wav2Vec2BaseModelOutput:
        """input_values (B, samples); attention_mask (B, samples), 1 for real samples (right padding)."""
        features = self.feature_extractor(input_values)  # (B, frames, channels)
        frame_mask = None
        if attention_mask is not None:
            frame_mask = self._get_feature_vector_attention_mask(
                features.shape[1], attention_mask, add_adapter=False
            )
        hidden_states, normed_features = self.feature_projection(features)
        hidden_states = self._mask_hidden_states(hidden_states, mask_time_indices, frame_mask)
        encoded = self.encoder(
            hidden_states,
            key_padding_mask=frame_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        last_hidden_state = encoded.last_hidden_state
        if self.adapter is not None:
            last_hidden_state = self.adapter(last_hidden_state)
        return Wav2Vec2BaseModelOutput(
            last_hidden_state=last_hidden_state,
            extract_features=normed_features,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
