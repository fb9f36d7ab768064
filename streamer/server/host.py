"""What the websocket sessions and the microphone use of the daemon: ``app.App`` as they see it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from streamer.config import Settings
    from streamer.engine import RecognitionEngine

    from .hub import ListenHub
    from .metrics import ServerMetrics


class ServerHost(Protocol):
    settings: Settings
    engine: RecognitionEngine
    metrics: ServerMetrics
    hub: ListenHub  # the microphone's captions, for /v1/listen
    mic: object | None  # the microphone source, when the daemon has one
    punctuator: Any  # streamer.readable's model for readable finals, or None
    stopping: bool  # shutting down: no new streams

    def engine_is_alive(self) -> bool: ...
