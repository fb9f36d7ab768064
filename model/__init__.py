"""Wav2Vec2-Conformer in plain PyTorch: configuration, modules, heads and checkpoint I/O."""

from model.auto import load_pretrained
from model.configuration import Wav2Vec2ConformerConfig
from model.heads import (
    Wav2Vec2ConformerForAudioFrameClassification,
    Wav2Vec2ConformerForCTC,
    Wav2Vec2ConformerForSequenceClassification,
    Wav2Vec2ConformerForXVector,
)
from model.hub import default_model_dir, resolve_model_dir
from model.masking import compute_mask_indices, sample_negative_indices
from model.modeling import Wav2Vec2ConformerModel, Wav2Vec2ConformerPreTrainedModel
from model.pretraining import Wav2Vec2ConformerForPreTraining
from model.quantize import quantize_dynamic_int8

__all__ = [
    "Wav2Vec2ConformerConfig",
    "Wav2Vec2ConformerForAudioFrameClassification",
    "Wav2Vec2ConformerForCTC",
    "Wav2Vec2ConformerForPreTraining",
    "Wav2Vec2ConformerForSequenceClassification",
    "Wav2Vec2ConformerForXVector",
    "Wav2Vec2ConformerModel",
    "Wav2Vec2ConformerPreTrainedModel",
    "compute_mask_indices",
    "default_model_dir",
    "load_pretrained",
    "quantize_dynamic_int8",
    "resolve_model_dir",
    "sample_negative_indices",
]

# Audio I/O and the model's input/output processing (feature extractor, CTC tokenizer, processor).
from model.audio import AudioLoadError, StreamResampler, load_audio, resample
from model.feature_extraction import BatchFeature, Wav2Vec2FeatureExtractor
from model.processor import Wav2Vec2Processor
from model.tokenizer import (
    Wav2Vec2CTCTokenizer,
    Wav2Vec2CTCTokenizerOutput,
    offsets_to_seconds,
    seconds_per_frame,
)

__all__ += [
    "AudioLoadError",
    "BatchFeature",
    "StreamResampler",
    "Wav2Vec2CTCTokenizer",
    "Wav2Vec2CTCTokenizerOutput",
    "Wav2Vec2FeatureExtractor",
    "Wav2Vec2Processor",
    "load_audio",
    "offsets_to_seconds",
    "resample",
    "seconds_per_frame",
]
