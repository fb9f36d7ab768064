"""Configuration of the Wav2Vec2-Conformer model.

Field names and defaults mirror `transformers.Wav2Vec2ConformerConfig`, so a `config.json` written by
either library can be read by the other. Keys this class does not know are kept verbatim and written
back, so that round trips never lose information.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, ClassVar

from model.hub import CONFIG_NAME, resolve_model_dir


class Wav2Vec2ConformerConfig:
    """Hyper-parameters of the feature encoder, the Conformer encoder and all heads.

    Every field can be passed as a keyword argument; keys it does not know are kept in ``extra``.

    Args:
        vocab_size: number of CTC output labels (the tokenizer's vocabulary); None for models without a
            CTC head.
        hidden_size: width of the encoder (attention, residual stream).
        num_hidden_layers: number of Conformer blocks.
        num_attention_heads: attention heads per block; must divide ``hidden_size``.
        intermediate_size: width of each feed-forward module's hidden layer.
        hidden_act: activation of the feed-forward modules ("gelu", "relu", "swish", ...).
        hidden_dropout: dropout on the residual branches and the encoder input.
        activation_dropout: dropout after the feed-forward activation.
        attention_dropout: dropout on the attention probabilities.
        feat_proj_dropout: dropout after the projection of the feature encoder's output.
        feat_quantizer_dropout: dropout on the features that go to the pre-training quantizer.
        final_dropout: dropout before a head's output layer.
        layerdrop: probability of skipping a whole block while training (LayerDrop).
        initializer_range: standard deviation of the normal initialisation of linear layers.
        layer_norm_eps: epsilon of every layer norm.
        feat_extract_norm: normalization in the feature encoder: "group" (first layer only, as wav2vec 2.0
            base) or "layer" (every layer).
        feat_extract_activation: activation of the feature encoder's convolutions.
        conv_dim: output channels of each feature-encoder convolution.
        conv_stride: stride of each feature-encoder convolution; their product is the frame hop in samples.
        conv_kernel: kernel size of each feature-encoder convolution; with the strides it sets the
            receptive field of a frame.
        conv_bias: whether the feature-encoder convolutions have a bias.
        num_conv_pos_embeddings: kernel size of the convolutional position embedding.
        num_conv_pos_embedding_groups: groups of the convolutional position embedding.
        apply_spec_augment: mask spans of time (and features) while training (SpecAugment).
        mask_time_prob: share of the frames that start a masked time span (roughly the masked share divided
            by ``mask_time_length``).
        mask_time_length: length of each masked time span, in frames.
        mask_time_min_masks: least number of masked time spans per utterance.
        mask_feature_prob: share of the feature channels that start a masked feature span.
        mask_feature_length: length of each masked feature span, in channels.
        mask_feature_min_masks: least number of masked feature spans.
        num_codevectors_per_group: entries of each codebook of the pre-training quantizer.
        num_codevector_groups: codebooks of the pre-training quantizer.
        contrastive_logits_temperature: temperature of the contrastive loss.
        num_negatives: distractors drawn per masked frame for the contrastive loss.
        codevector_dim: size of the quantized vectors.
        proj_codevector_dim: size of the final projection of the quantized and the context vectors.
        diversity_loss_weight: weight of the codebook diversity loss.
        ctc_loss_reduction: how the CTC loss is reduced over the batch: "sum" or "mean".
        ctc_zero_infinity: zero infinite CTC losses (inputs too short for their targets) and their
            gradients.
        use_weighted_layer_sum: classification heads read a learned weighted sum of all layers' outputs.
        classifier_proj_size: width of the projection before the sequence classifier.
        tdnn_dim: output channels of each TDNN layer of the x-vector head.
        tdnn_kernel: kernel size of each TDNN layer.
        tdnn_dilation: dilation of each TDNN layer.
        xvector_output_dim: size of the x-vector embedding.
        pad_token_id: id of the padding label, which is the CTC blank.
        bos_token_id: id of the beginning-of-sequence token.
        eos_token_id: id of the end-of-sequence token.
        add_adapter: stack a strided convolutional adapter on the encoder (halves the frame rate per
            layer).
        adapter_kernel_size: kernel size of the adapter's convolutions.
        adapter_stride: stride of the adapter's convolutions.
        num_adapter_layers: number of adapter layers.
        output_hidden_size: width of the adapter's output; None means ``hidden_size``.
        position_embeddings_type: position information in self-attention: "relative" (Transformer-XL
            style), "rotary", or None (only the convolutional position embedding).
        rotary_embedding_base: base of the rotary embedding's frequencies.
        max_source_positions: longest input, in frames, that the relative position table covers.
        conv_depthwise_kernel_size: kernel size of the depthwise convolution in each Conformer block.
        conformer_conv_dropout: dropout at the end of each Conformer convolution module.
        id2label: label names of the classification heads, by id.
        label2id: label ids by name (derived from ``id2label`` when missing).
        problem_type: loss of the sequence classifier: "single_label_classification",
            "multi_label_classification" or "regression"; None picks from the labels.
        architectures: head classes the checkpoint was saved from (`model.auto.load_pretrained` builds
            the first one).
    """

    model_type: ClassVar[str] = "wav2vec2-conformer"

    # Encoder size.
    vocab_size: int | None = None
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    # Regularisation.
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.1
    attention_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    feat_quantizer_dropout: float = 0.0
    final_dropout: float = 0.1
    layerdrop: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    # Convolutional feature encoder.
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    # SpecAugment.
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    # Pre-training (quantizer and contrastive loss).
    num_codevectors_per_group: int = 320
    num_codevector_groups: int = 2
    contrastive_logits_temperature: float = 0.1
    num_negatives: int = 100
    codevector_dim: int = 256
    proj_codevector_dim: int = 256
    diversity_loss_weight: float = 0.1
    # Heads.
    ctc_loss_reduction: str = "sum"
    ctc_zero_infinity: bool = False
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    tdnn_dim: tuple[int, ...] = (512, 512, 512, 512, 1500)
    tdnn_kernel: tuple[int, ...] = (5, 3, 3, 1, 1)
    tdnn_dilation: tuple[int, ...] = (1, 2, 3, 1, 1)
    xvector_output_dim: int = 512
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    # Adapter stacked on the encoder.
    add_adapter: bool = False
    adapter_kernel_size: int = 3
    adapter_stride: int = 2
    num_adapter_layers: int = 3
    output_hidden_size: int | None = None
    # Conformer specifics.
    position_embeddings_type: str | None = "relative"
    rotary_embedding_base: int = 10000
    max_source_positions: int = 5000
    conv_depthwise_kernel_size: int = 31
    conformer_conv_dropout: float = 0.1
    # Classification labels (shared by every classification head).
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    architectures: list[str] | None = None

    def __init__(self, **kwargs: Any) -> None:
        num_labels = kwargs.pop("num_labels", None)
        self.extra: dict[str, Any] = {}
        for name in self.field_names():
            setattr(self, name, copy.deepcopy(getattr(type(self), name)))
        for key, value in kwargs.items():
            if key in self.field_names():
                setattr(self, key, value)
            else:
                self.extra[key] = value
        self.extra.pop("model_type", None)
        self.extra.pop("num_feat_extract_layers", None)  # derived, see the property
        self.output_hidden_size = self.output_hidden_size or self.hidden_size
        if self.id2label is not None:
            # JSON turns integer keys into strings.
            self.id2label = {int(k): v for k, v in self.id2label.items()}
            self.label2id = self.label2id or {v: k for k, v in self.id2label.items()}
        if num_labels is not None or self.id2label is None:
            self.num_labels = num_labels if num_labels is not None else 2
        self._validate()

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found normally: expose the unknown keys read from JSON as attributes.
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the known fields, in declaration order."""
        return tuple(name for name in cls.__annotations__ if name != "model_type")

    def _validate(self) -> None:
        lengths = {len(self.conv_dim), len(self.conv_stride), len(self.conv_kernel)}
        if len(lengths) != 1:
            raise ValueError(
                "conv_dim, conv_stride and conv_kernel must have the same length, got "
                f"{len(self.conv_dim)}, {len(self.conv_stride)}, {len(self.conv_kernel)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}"
            )
        if self.position_embeddings_type not in (None, "relative", "rotary"):
            raise ValueError(f"unknown position_embeddings_type {self.position_embeddings_type!r}")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")

    # Derived values ---------------------------------------------------------------------------------

    @property
    def num_feat_extract_layers(self) -> int:
        return len(self.conv_dim)

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Audio samples per encoder frame: the product of the feature-encoder strides."""
        return math.prod(self.conv_stride)

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label is not None else 0

    @num_labels.setter
    def num_labels(self, num_labels: int) -> None:
        if self.id2label is None or len(self.id2label) != num_labels:
            self.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
            self.label2id = {label: i for i, label in self.id2label.items()}

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # Serialisation ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary: known fields, then the unknown keys that came in."""
        out: dict[str, Any] = {"model_type": self.model_type}
        for name in self.field_names():
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = list(value)
            if name == "id2label" and value is not None:
                value = {str(k): v for k, v in value.items()}
            out[name] = copy.deepcopy(value)
        out["num_feat_extract_layers"] = self.num_feat_extract_layers
        for key, value in self.extra.items():
            out.setdefault(key, copy.deepcopy(value))
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json_string(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> Wav2Vec2ConformerConfig:
        return cls(**{**data, **overrides})

    @classmethod
    def from_json_file(cls, path: str | Path) -> Wav2Vec2ConformerConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def from_pretrained(
        cls, dir_or_id: str | Path, revision: str = "main", **overrides: Any
    ) -> Wav2Vec2ConformerConfig:
        """Read `config.json` from a local directory or a hub id found in the local Hugging Face cache."""
        config = cls.from_json_file(resolve_model_dir(dir_or_id, revision) / CONFIG_NAME)
        for key, value in overrides.items():
            if key in cls.field_names() or key == "num_labels":
                setattr(config, key, value)
            else:
                config.extra[key] = value
        return config

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.to_json_file(directory / CONFIG_NAME)

    def copy(self) -> Wav2Vec2ConformerConfig:
        return type(self).from_dict(self.to_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Wav2Vec2ConformerConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
