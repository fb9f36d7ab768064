"""Wav2Vec2-Conformer in plain PyTorch: configuration, modules, heads and checkpoint I/O.

The exports below load on first use (PEP 562): ``from model import load_pretrained`` works as always,
while code that only needs torch-free parts (``model.ctc``, ``model.hub``, the beam search's process)
does not pay for importing torch (~1 s and ~190 MB of RSS).
"""

from __future__ import annotations

import importlib
from typing import Any

# exported name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "load_pretrained": "model.auto",
    "Wav2Vec2ConformerConfig": "model.configuration",
    "Wav2Vec2ConformerForAudioFrameClassification": "model.heads",
    "Wav2Vec2ConformerForCTC": "model.heads",
    "Wav2Vec2ConformerForSequenceClassification": "model.heads",
    "Wav2Vec2ConformerForXVector": "model.heads",
    "default_model_dir": "model.hub",
    "resolve_model_dir": "model.hub",
    "compute_mask_indices": "model.masking",
    "sample_negative_indices": "model.masking",
    "Wav2Vec2ConformerModel": "model.modeling",
    "Wav2Vec2ConformerPreTrainedModel": "model.modeling",
    "Wav2Vec2ConformerForPreTraining": "model.pretraining",
    "quantize_dynamic_int8": "model.quantize",
    # audio I/O and the model's input/output processing (feature extractor, CTC tokenizer, processor)
    "AudioLoadError": "model.audio",
    "StreamResampler": "model.audio",
    "load_audio": "model.audio",
    "resample": "model.audio",
    "BatchFeature": "model.feature_extraction",
    "Wav2Vec2FeatureExtractor": "model.feature_extraction",
    "Wav2Vec2Processor": "model.processor",
    "Wav2Vec2CTCTokenizer": "model.tokenizer",
    "Wav2Vec2CTCTokenizerOutput": "model.tokenizer",
    "offsets_to_seconds": "model.tokenizer",
    "seconds_per_frame": "model.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
