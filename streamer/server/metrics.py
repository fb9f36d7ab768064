"""A small Prometheus text-exposition registry (format 0.0.4): counters, gauges, histograms.

Statistics kept elsewhere (the engine's) are read at scrape time through callbacks: a
:class:`CallbackCounter` for those that only increase, a :class:`Gauge` with a callback for levels.

Thread-safe: the engine worker and the sounddevice callback thread may update metrics too.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.labelnames)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        if not self.labelnames:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_format_value(v)}" for k, v in items]


class CallbackCounter(_Metric):
    """A counter whose value is read from ``callback`` at scrape time: a monotonic statistic kept elsewhere.

    The callback's owner guarantees that the value only increases (a drop is read by Prometheus as a
    counter reset, e.g. after an engine restart). The name must end in ``_total``.
    """

    kind = "counter"

    def __init__(self, name: str, help_text: str, callback: Callable[[], float]) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        super().__init__(name, help_text)
        self._callback = callback

    def value(self) -> float:
        return float(self._callback())

    def render(self) -> list[str]:
        return [f"{self.name} {_format_value(self.value())}"]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        callback: Callable[[], float | Iterable[tuple[dict[str, str], float]]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        self._callback = callback
        if not self.labelnames and callback is None:
            self._values[()] = 0.0

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def value(self, **labels: str) -> float:
        if self._callback is not None and not self.labelnames:
            return float(self._callback())  # type: ignore[arg-type]
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        if self._callback is not None:
            result = self._callback()
            if isinstance(result, int | float):
                return [f"{self.name} {_format_value(float(result))}"]
            return [
                f"{self.name}{_labels(self.labelnames, [lab[n] for n in self.labelnames])} {_format_value(v)}"
                for lab, v in result
            ]
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_format_value(v)}" for k, v in items]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets))
        # key -> (bucket counts (non-cumulative, last = +Inf), sum, count)
        self._data: dict[tuple[str, ...], tuple[list[int], float, int]] = {}
        if not self.labelnames:
            self._data[()] = ([0] * (len(self.buckets) + 1), 0.0, 0)

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        index = len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                index = i
                break
        with self._lock:
            counts, total, n = self._data.get(key) or ([0] * (len(self.buckets) + 1), 0.0, 0)
            counts[index] += 1
            self._data[key] = (counts, total + value, n + 1)

    def count(self, **labels: str) -> int:
        data = self._data.get(self._key(labels))
        return data[2] if data else 0

    def render(self) -> list[str]:
        lines = []
        with self._lock:
            items = sorted((k, (list(c), s, n)) for k, (c, s, n) in self._data.items())
        for key, (counts, total, n) in items:
            cumulative = 0
            for bound, c in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += c
                le = 'le="' + ("+Inf" if math.isinf(bound) else _format_value(bound)) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_format_value(total)}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {n}")
        return lines


M = TypeVar("M", bound=_Metric)


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def register(self, metric: M) -> M:
        if metric.name in self._metrics:
            raise ValueError(f"duplicate metric {metric.name}")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self.register(Counter(name, help_text, labelnames))

    def callback_counter(self, name: str, help_text: str, callback: Callable[[], float]) -> CallbackCounter:
        return self.register(CallbackCounter(name, help_text, callback))

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = (), callback=None) -> Gauge:
        return self.register(Gauge(name, help_text, labelnames, callback))

    def histogram(
        self, name: str, help_text: str, labelnames: Sequence[str] = (), buckets=LATENCY_BUCKETS
    ) -> Histogram:
        return self.register(Histogram(name, help_text, labelnames, buckets))

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            try:
                body = metric.render()
            except Exception:  # a failing callback must not break the whole scrape
                continue
            lines.extend(metric.header())
            lines.extend(body)
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """Every metric the daemon exposes at ``/metrics``."""

    def __init__(self, engine_stats: Callable[[], object] | None = None) -> None:
        self.registry = r = Registry()
        self._engine_stats = engine_stats
        self.connections_active = r.gauge(
            "conformer_connections_active", "Open websocket connections by endpoint.", ["endpoint"]
        )
        self.connections_total = r.counter(
            "conformer_connections_total", "Accepted websocket connections by endpoint.", ["endpoint"]
        )
        self.connections_refused = r.counter(
            "conformer_connections_refused_total",
            "Connections refused, by reason (engine_dead: right after the handshake, close 1013).",
            ["reason"],
        )
        self.streams_active = r.gauge("conformer_streams_active", "Recognition streams open in this server.")
        self.streams_total = r.counter(
            "conformer_streams_total", "Recognition streams opened, by endpoint.", ["endpoint"]
        )
        self.audio_seconds = r.counter(
            "conformer_audio_seconds_total",
            "Seconds of audio received from clients, by endpoint.",
            ["endpoint"],
        )
        self.errors = r.counter("conformer_errors_total", "Error events sent to clients, by code.", ["code"])
        self.events = r.counter("conformer_events_total", "Transcript events sent, by type.", ["type"])
        self.latency = r.histogram(
            "conformer_event_latency_seconds",
            "Delay from receiving the last audio an event covers to the event reaching the server loop.",
            ["type"],
        )
        self.format_seconds = r.histogram(
            "conformer_format_seconds",
            "Time readable formatting added to a final (punctuation model; plus the thread hop for long finals).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
        )
        self.vosk_late_replies = r.counter(
            "conformer_vosk_late_replies_total",
            "vosk replies sent before the engine caught up with the frame (server.vosk_reply_wait_s ran out).",
        )
        self.mic_errors = r.counter(
            "conformer_mic_errors_total", "Microphone capture errors (device loss, open failures).", ["kind"]
        )
        self.mic_up = r.gauge("conformer_mic_up", "1 while the microphone is capturing.")
        self.listeners = r.gauge("conformer_listen_clients", "Clients connected to /v1/listen.")
        r.gauge("conformer_engine_up", "1 while the engine worker is alive.", callback=self._engine_up)
        # Monotonic engine statistics: counters (rate() them).
        for name, stat, help_text in (
            (
                "conformer_engine_audio_seconds_total",
                "audio_seconds",
                "Seconds of audio the engine accepted.",
            ),
            (
                "conformer_engine_compute_seconds_total",
                "compute_seconds",
                "Seconds the engine spent in model forwards.",
            ),
            ("conformer_engine_batches_total", "batches", "Model batches the engine has run."),
            ("conformer_engine_windows_total", "windows", "Windows run through the model."),
            ("conformer_engine_gated_windows_total", "gated_windows", "Windows skipped by the energy gate."),
            ("conformer_engine_overloads_total", "overloads", "Overload-policy activations."),
            ("conformer_engine_errors_total", "errors", "Failed model batches in the engine."),
        ):
            r.callback_counter(name, help_text, callback=lambda stat=stat: self._stat(stat))
        # Levels: gauges.
        r.gauge("conformer_real_time_factor", "Engine compute seconds / audio seconds.", callback=self._rtf)
        for name, stat, help_text in (
            ("conformer_engine_streams_active", "active_streams", "Streams open in the engine."),
            ("conformer_engine_queue_depth", "queue_depth", "Streams with a window waiting for the model."),
            (
                "conformer_engine_queued_audio_seconds",
                "queued_audio_seconds",
                "Audio received but not yet run, all streams.",
            ),
        ):
            r.gauge(name, help_text, callback=lambda stat=stat: self._stat(stat))
        r.gauge(
            "conformer_engine_window_latency_seconds",
            "Engine latency from a window's newest sample arriving to its events, recent quantiles.",
            ["quantile"],
            callback=self._latency_quantiles,
        )
        self.engine_alive: Callable[[], bool] = lambda: True

    def _latency_quantiles(self) -> list[tuple[dict[str, str], float]]:
        samples = sorted(getattr(self._stats(), "latency_samples", ()) or ())
        if not samples:
            return []
        out = []
        for q in (0.5, 0.9, 0.99):
            index = min(len(samples) - 1, round(q * (len(samples) - 1)))
            out.append(({"quantile": str(q)}, float(samples[index])))
        return out

    def _stats(self) -> object | None:
        return self._engine_stats() if self._engine_stats else None

    def _stat(self, name: str) -> float:
        value = getattr(self._stats(), name, 0.0)
        return float(value or 0.0)

    def _rtf(self) -> float:
        stats = self._stats()
        audio = float(getattr(stats, "audio_seconds", 0.0) or 0.0)
        compute = float(getattr(stats, "compute_seconds", 0.0) or 0.0)
        return compute / audio if audio > 0 else 0.0

    def _engine_up(self) -> float:
        return 1.0 if self.engine_alive() else 0.0

    def render(self) -> str:
        return self.registry.render()
