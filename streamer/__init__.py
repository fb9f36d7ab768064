"""conformer-streamer: streaming speech recognition on Wav2Vec2-Conformer."""

__version__ = "0.1.0"
