"""Load a checkpoint into the class its `config.json` names, as transformers' `AutoModel` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.configuration import Wav2Vec2ConformerConfig
from model.heads import (
    Wav2Vec2ConformerForAudioFrameClassification,
    Wav2Vec2ConformerForCTC,
    Wav2Vec2ConformerForSequenceClassification,
    Wav2Vec2ConformerForXVector,
)
from model.modeling import Wav2Vec2ConformerModel, Wav2Vec2ConformerPreTrainedModel
from model.pretraining import Wav2Vec2ConformerForPreTraining

MODEL_CLASSES: dict[str, type[Wav2Vec2ConformerPreTrainedModel]] = {
    cls.__name__: cls
    for cls in (
        Wav2Vec2ConformerModel,
        Wav2Vec2ConformerForCTC,
        Wav2Vec2ConformerForPreTraining,
        Wav2Vec2ConformerForSequenceClassification,
        Wav2Vec2ConformerForAudioFrameClassification,
        Wav2Vec2ConformerForXVector,
    )
}


def model_class_for(config: Wav2Vec2ConformerConfig) -> type[Wav2Vec2ConformerPreTrainedModel]:
    """The model class named first in `config.architectures` (the bare model if none)."""
    for name in config.architectures or []:
        if name in MODEL_CLASSES:
            return MODEL_CLASSES[name]
    return Wav2Vec2ConformerModel


def load_pretrained(dir_or_id: str | Path, **kwargs: Any) -> Wav2Vec2ConformerPreTrainedModel:
    """Load a checkpoint into the head class its config.json names (e.g. Wav2Vec2ConformerForCTC)."""
    config = Wav2Vec2ConformerConfig.from_pretrained(dir_or_id, revision=kwargs.get("revision", "main"))
    return model_class_for(config).from_pretrained(dir_or_id, **kwargs)
