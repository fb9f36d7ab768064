"""Self-supervised pre-training head: Gumbel product quantizer and the contrastive + diversity loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from model.configuration import Wav2Vec2ConformerConfig
from model.modeling import Wav2Vec2ConformerModel, Wav2Vec2ConformerPreTrainedModel
from model.outputs import Wav2Vec2ConformerForPreTrainingOutput


class GumbelVectorQuantizer(nn.Module):
    """Product quantization: per group, pick one of `num_vars` codevectors and concatenate the groups.

    Training picks with a straight-through Gumbel softmax (hard one-hot forward, soft gradient);
    evaluation takes the arg-max. The perplexity of the average code distribution measures codebook use.
    """

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__()
        self.num_groups = config.num_codevector_groups
        self.num_vars = config.num_codevectors_per_group
        if config.codevector_dim % self.num_groups:
            raise ValueError(
                f"codevector_dim {config.codevector_dim} must be divisible by num_codevector_groups {self.num_groups}"
            )
        self.codevectors = nn.Parameter(
            torch.empty(1, self.num_groups * self.num_vars, config.codevector_dim // self.num_groups)
        )
        self.weight_proj = nn.Linear(config.conv_dim[-1], self.num_groups * self.num_vars)
        self.temperature = 2.0

    def init_weights(self) -> None:
        nn.init.normal_(self.weight_proj.weight, 0.0, 1.0)
        nn.init.zeros_(self.weight_proj.bias)
        nn.init.uniform_(self.codevectors)

    @staticmethod
    def _perplexity(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """exp(entropy) of the mean code distribution per group, summed over groups; probs (N, G, V)."""
        if mask is not None:
            probs = torch.where(mask.flatten()[:, None, None], probs, torch.zeros_like(probs))
            marginal = probs.sum(dim=0) / mask.sum()
        else:
            marginal = probs.mean(dim=0)
        return torch.exp(-torch.sum(torch.xlogy(marginal, marginal), dim=-1)).sum()

    def forward(
        self, features: torch.Tensor, mask_time_indices: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, conv_dim) -> codevectors (B, T, codevector_dim) and the codebook perplexity."""
        batch, length, _ = features.shape
        logits = self.weight_proj(features).view(batch * length * self.num_groups, -1)  # (B*T*G, V)
        if self.training:
            one_hot = F.gumbel_softmax(logits.float(), tau=self.temperature, hard=True).type_as(logits)
            soft = torch.softmax(logits.view(batch * length, self.num_groups, -1).float(), dim=-1)
            perplexity = self._perplexity(soft, mask_time_indices)
        else:
            one_hot = torch.zeros_like(logits).scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
            perplexity = self._perplexity(
                one_hot.view(batch * length, self.num_groups, -1), mask_time_indices
            )
        # (B*T, G*V, 1) * (1, G*V, D/G) -> sum over V within each group -> (B, T, D)
        weighted = one_hot.view(batch * length, -1, 1) * self.codevectors
        codevectors = weighted.view(batch * length, self.num_groups, self.num_vars, -1).sum(dim=-2)
        return codevectors.view(batch, length, -1), perplexity


class Wav2Vec2ConformerForPreTraining(Wav2Vec2ConformerPreTrainedModel):
    """wav2vec 2.0 objective: identify the true quantized frame among negatives at masked positions."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__(config)
        self.wav2vec2_conformer = Wav2Vec2ConformerModel(config, initialize=False)
        self.dropout_features = nn.Dropout(config.feat_quantizer_dropout)
        self.quantizer = GumbelVectorQuantizer(config)
        self.project_hid = nn.Linear(config.hidden_size, config.proj_codevector_dim)
        self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim)
        self.post_init()

    def init_weights(self) -> None:
        # Plain nn.Linear defaults for the two projections, as in the reference.
        self.project_hid.reset_parameters()
        self.project_q.reset_parameters()

    def set_gumbel_temperature(self, temperature: float) -> None:
        self.quantizer.temperature = temperature

    @staticmethod
    def compute_contrastive_logits(
        target_features: torch.Tensor,
        negative_features: torch.Tensor,
        predicted_features: torch.Tensor,
        temperature: float = 0.1,
    ) -> torch.Tensor:
        """Cosine similarity of predictions with [positive, negatives...], divided by the temperature.

        target (1, B, T, D), negatives (K, B, T, D), predicted (B, T, D) -> (1 + K, B, T).
        """
        candidates = torch.cat([target_features, negative_features], dim=0)
        logits = torch.cosine_similarity(predicted_features.float(), candidates.float(), dim=-1)
        return logits.type_as(candidates) / temperature

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        sampled_negative_indices: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> Wav2Vec2ConformerForPreTrainingOutput:
        """mask_time_indices (B, T) bool; sampled_negative_indices (B, T, K) flat indices into B * T."""
        if mask_time_indices is not None:
            mask_time_indices = mask_time_indices.to(torch.bool)
        outputs = self.wav2vec2_conformer(
            input_values,
            attention_mask=attention_mask,
            mask_time_indices=mask_time_indices,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        predicted = self.project_hid(outputs.last_hidden_state)
        features = self.dropout_features(outputs.extract_features)
        quantized, perplexity = self.quantizer(features, mask_time_indices=mask_time_indices)
        quantized = self.project_q(quantized.to(self.project_q.weight.dtype))

        loss = contrastive_loss = diversity_loss = None
        if sampled_negative_indices is not None:
            if mask_time_indices is None:
                raise ValueError("the contrastive loss needs mask_time_indices")
            batch, length, width = quantized.shape
            negatives = quantized.view(-1, width)[sampled_negative_indices.long().view(-1)]
            negatives = negatives.view(batch, length, -1, width).permute(2, 0, 1, 3)  # (K, B, T, D)
            logits = self.compute_contrastive_logits(
                quantized[None], negatives, predicted, self.config.contrastive_logits_temperature
            )
            # A negative identical to the positive would be an unfair "wrong" answer: exclude it.
            negative_is_positive = (quantized == negatives).all(-1)
            if negative_is_positive.any():
                logits[1:][negative_is_positive] = float("-inf")
            # (1 + K, B, T) -> (T * B, 1 + K); the positive is class 0, unmasked frames are ignored.
            logits = logits.transpose(0, 2).reshape(-1, logits.size(0))
            target = ((1 - mask_time_indices.long()) * -100).transpose(0, 1).flatten()
            contrastive_loss = F.cross_entropy(logits.float(), target, reduction="sum")
            num_codevectors = self.config.num_codevectors_per_group * self.config.num_codevector_groups
            diversity_loss = ((num_codevectors - perplexity) / num_codevectors) * mask_time_indices.sum()
            loss = contrastive_loss + self.config.diversity_loss_weight * diversity_loss

        return Wav2Vec2ConformerForPreTrainingOutput(
            loss=loss,
            projected_states=predicted,
            projected_quantized_states=quantized,
            codevector_perplexity=perplexity,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            contrastive_loss=contrastive_loss,
            diversity_loss=diversity_loss,
        )
