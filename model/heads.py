"""Task heads on top of `Wav2Vec2ConformerModel`: CTC, sequence / frame classification, x-vectors."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from model.configuration import Wav2Vec2ConformerConfig
from model.modeling import Wav2Vec2ConformerModel, Wav2Vec2ConformerPreTrainedModel
from model.outputs import CausalLMOutput, SequenceClassifierOutput, TokenClassifierOutput, XVectorOutput


class _EncoderHead(Wav2Vec2ConformerPreTrainedModel):
    """A head owning the encoder as `wav2vec2_conformer` (the checkpoint key prefix)."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__(config)
        self.wav2vec2_conformer = Wav2Vec2ConformerModel(config, initialize=False)

    def freeze_base_model(self) -> None:
        """Train only the head."""
        for param in self.wav2vec2_conformer.parameters():
            param.requires_grad = False


class _LayerSumHead(_EncoderHead):
    """Classification heads that may pool a learned softmax-weighted sum of all encoder layers."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__(config)
        if config.use_weighted_layer_sum:
            num_layers = config.num_hidden_layers + 1  # the encoder input counts as a layer
            self.layer_weights = nn.Parameter(torch.ones(num_layers) / num_layers)

    def init_weights(self) -> None:
        if hasattr(self, "layer_weights"):
            nn.init.constant_(self.layer_weights, 1.0 / self.layer_weights.numel())

    def _encode(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_attentions: bool,
        output_hidden_states: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """(features to classify, hidden states to return, attentions)."""
        use_sum = self.config.use_weighted_layer_sum
        outputs = self.wav2vec2_conformer(
            input_values,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states or use_sum,
        )
        if use_sum:
            stacked = torch.stack(outputs.hidden_states, dim=1)  # (B, layers, T, d)
            weights = self.layer_weights.softmax(dim=-1).view(-1, 1, 1)
            features = (stacked * weights).sum(dim=1)
        else:
            features = outputs.last_hidden_state
        return features, outputs.hidden_states, outputs.attentions


class Wav2Vec2ConformerForCTC(_EncoderHead):
    """Per-frame vocabulary logits trained with CTC; the blank symbol is `pad_token_id`."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__(config)
        if config.vocab_size is None:
            raise ValueError("Wav2Vec2ConformerForCTC needs config.vocab_size")
        self.dropout = nn.Dropout(config.final_dropout)
        width = config.output_hidden_size if config.add_adapter else config.hidden_size
        self.lm_head = nn.Linear(width, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> CausalLMOutput:
        """labels (B, U): token ids padded with -100 (the blank id is ignored too)."""
        if labels is not None and labels.max() >= self.config.vocab_size:
            raise ValueError(f"label values must be < vocab_size={self.config.vocab_size}")
        outputs = self.wav2vec2_conformer(
            input_values,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.lm_head(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_values, dtype=torch.long)
            logit_lengths = self._get_feat_extract_output_lengths(attention_mask.sum(-1)).to(torch.long)
            loss = self.ctc_loss(logits, labels, logit_lengths)
        return CausalLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def ctc_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, logit_lengths: torch.Tensor
    ) -> torch.Tensor:
        blank = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        labels = labels.to(logits.device)
        label_mask = (labels != -100) & (labels != blank)
        targets = labels.masked_select(label_mask)  # CTC takes the targets concatenated
        log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)  # (T, B, vocab)
        with torch.backends.cudnn.flags(enabled=False):  # cudnn's CTC has stricter input requirements
            return F.ctc_loss(
                log_probs,
                targets,
                logit_lengths,
                label_mask.sum(-1),
                blank=blank,
                reduction=self.config.ctc_loss_reduction,
                zero_infinity=self.config.ctc_zero_infinity,
            )


class Wav2Vec2ConformerForSequenceClassification(_LayerSumHead):
    """Utterance-level classification: projection, masked mean over frames, linear classifier."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        if config.add_adapter:
            raise ValueError("sequence classification does not support the adapter (config.add_adapter=True)")
        super().__init__(config)
        self.projector = nn.Linear(config.hidden_size, config.classifier_proj_size)
        self.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> SequenceClassifierOutput:
        features, hidden_states, attentions = self._encode(
            input_values, attention_mask, output_attentions, output_hidden_states
        )
        projected = self.projector(features)  # (B, T, proj)
        if attention_mask is None:
            pooled = projected.mean(dim=1)
        else:
            frame_mask = self._get_feature_vector_attention_mask(projected.shape[1], attention_mask)
            projected = projected.masked_fill(~frame_mask[..., None], 0.0)
            pooled = projected.sum(dim=1) / frame_mask.sum(dim=1, keepdim=True)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1))
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=hidden_states, attentions=attentions
        )


class Wav2Vec2ConformerForAudioFrameClassification(_LayerSumHead):
    """Per-frame classification (e.g. speaker diarization); labels are one-hot / multi-hot per frame."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        if config.add_adapter:
            raise ValueError(
                "audio frame classification does not support the adapter (config.add_adapter=True)"
            )
        super().__init__(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.num_labels = config.num_labels
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> TokenClassifierOutput:
        """labels (B, T, num_labels): the arg-max class of each frame is the target."""
        features, hidden_states, attentions = self._encode(
            input_values, attention_mask, output_attentions, output_hidden_states
        )
        logits = self.classifier(features)
        loss = None
        if labels is not None:
            targets = labels.view(-1, self.num_labels).argmax(dim=1)
            loss = F.cross_entropy(logits.view(-1, self.num_labels), targets)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=hidden_states, attentions=attentions
        )


class AMSoftmaxLoss(nn.Module):
    """Additive-margin softmax: cross-entropy on scaled cosines, the target's cosine reduced by `margin`."""

    def __init__(self, input_dim: int, num_labels: int, scale: float = 30.0, margin: float = 0.4) -> None:
        super().__init__()
        self.scale = scale
        self.margin = margin
        self.num_labels = num_labels
        self.weight = nn.Parameter(torch.randn(input_dim, num_labels))

    def init_weights(self) -> None:
        nn.init.normal_(self.weight)

    def forward(self, hidden_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.flatten()
        cosine = F.normalize(hidden_states, dim=1) @ F.normalize(self.weight, dim=0)  # (B, labels)
        is_target = F.one_hot(labels, self.num_labels).bool()
        logits = self.scale * torch.where(is_target, cosine - self.margin, cosine)
        return F.cross_entropy(logits, labels)


class TDNNLayer(nn.Module):
    """Dilated 1-D convolution over time (time-delay layer) + ReLU.

    The kernel is stored as a Linear over (kernel_size * in_dim) inputs, as in the reference checkpoints,
    and applied as a convolution by viewing it as (out, in, kernel).
    """

    def __init__(self, config: Wav2Vec2ConformerConfig, layer_id: int) -> None:
        super().__init__()
        self.in_conv_dim = config.tdnn_dim[layer_id - 1] if layer_id > 0 else config.tdnn_dim[layer_id]
        self.out_conv_dim = config.tdnn_dim[layer_id]
        self.kernel_size = config.tdnn_kernel[layer_id]
        self.dilation = config.tdnn_dilation[layer_id]
        self.kernel = nn.Linear(self.in_conv_dim * self.kernel_size, self.out_conv_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, in) -> (B, T - dilation * (kernel - 1), out)."""
        # Linear weight (out, kernel * in) -> conv weight (out, in, kernel).
        weight = self.kernel.weight.view(self.out_conv_dim, self.kernel_size, self.in_conv_dim).transpose(
            1, 2
        )
        out = F.conv1d(hidden_states.transpose(1, 2), weight, self.kernel.bias, dilation=self.dilation)
        return F.relu(out.transpose(1, 2))


class Wav2Vec2ConformerForXVector(_LayerSumHead):
    """Speaker embeddings: TDNN stack, mean+std statistics pooling, embedding and AM-softmax classifier."""

    def __init__(self, config: Wav2Vec2ConformerConfig) -> None:
        super().__init__(config)
        self.projector = nn.Linear(config.hidden_size, config.tdnn_dim[0])
        self.tdnn = nn.ModuleList(TDNNLayer(config, i) for i in range(len(config.tdnn_dim)))
        self.feature_extractor = nn.Linear(config.tdnn_dim[-1] * 2, config.xvector_output_dim)
        self.classifier = nn.Linear(config.xvector_output_dim, config.xvector_output_dim)
        self.objective = AMSoftmaxLoss(config.xvector_output_dim, config.num_labels)
        self.post_init()

    def _get_tdnn_output_lengths(self, input_lengths: torch.Tensor | int) -> torch.Tensor | int:
        # The reference ignores the dilation here; kept identical so pooled statistics match.
        for kernel in self.config.tdnn_kernel:
            input_lengths = input_lengths - kernel + 1
        return input_lengths

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> XVectorOutput:
        features, hidden_states, attentions = self._encode(
            input_values, attention_mask, output_attentions, output_hidden_states
        )
        frames = self.projector(features)
        for layer in self.tdnn:
            frames = layer(frames)
        if attention_mask is None:
            mean, std = frames.mean(dim=1), frames.std(dim=1)
        else:
            lengths = self._get_tdnn_output_lengths(
                self._get_feat_extract_output_lengths(attention_mask.sum(dim=1))
            )
            stats = [
                (frames[i, :n].mean(dim=0), frames[i, :n].std(dim=0)) for i, n in enumerate(lengths.tolist())
            ]
            mean = torch.stack([m for m, _ in stats])
            std = torch.stack([s for _, s in stats])
        embeddings = self.feature_extractor(torch.cat([mean, std], dim=-1))
        logits = self.classifier(embeddings)
        loss = self.objective(logits, labels) if labels is not None else None
        return XVectorOutput(
            loss=loss,
            logits=logits,
            embeddings=embeddings,
            hidden_states=hidden_states,
            attentions=attentions,
        )
