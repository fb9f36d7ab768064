"""The daemon: routing, admission (auth, Origin, connection limit), lifecycle and graceful shutdown.

One ``App`` serves an engine (started and stopped by the caller: ``commands/serve.py``), the websocket server on
``server.port`` (``/v1/stream``, ``/v1/listen`` + HTTP routes), the optional vosk-compatible server on
``server.vosk_port``, and the optional microphone source.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from streamer.config import Settings

if TYPE_CHECKING:
    from streamer.engine import RecognitionEngine

from . import http as http_routes
from .hub import ListenHub
from .listen import ListenSession
from .metrics import ServerMetrics
from .native import NativeSession
from .session import ENGINE_DOWN, WebSocketSession
from .vosk import VoskSession

log = logging.getLogger("streamer.server")

WS_ROUTES = {"/v1/stream": NativeSession, "/v1/listen": ListenSession}


def _is_upgrade(request: Request) -> bool:
    return "websocket" in request.headers.get("Upgrade", "").lower()


class App:
    def __init__(
        self,
        settings: Settings,
        engine: RecognitionEngine,
        *,
        static_dir: str | Path | None = None,
        mic_factory: Any = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = ServerMetrics(engine_stats=self._engine_stats)
        self.metrics.engine_alive = self.engine_is_alive
        self.hub = ListenHub(self.metrics)
        self.static_dir = Path(static_dir or settings.server.static_dir or http_routes.DEFAULT_STATIC_DIR)
        self.sessions: set[WebSocketSession] = set()
        self.stopping = False
        self.started_at = time.monotonic()
        self.server: Server | None = None
        self.vosk_server: Server | None = None
        self.mic = None
        self._mic_factory = mic_factory
        # the punctuation model for streams that ask for readable finals; a bad path fails here, at startup
        self.punctuator = None
        if settings.format.readable:
            from streamer.readable import load_punctuator

            self.punctuator = load_punctuator(settings.format.punct_model)

    # ------------------------------------------------------------------ engine
    def _engine_stats(self) -> Any:
        try:
            return self.engine.stats()
        except Exception:
            return None

    def engine_is_alive(self) -> bool:
        """Is the engine's inference worker running?"""
        return self.engine.scheduler.running

    # ------------------------------------------------------------------ admission
    def _ssl_context(self) -> ssl.SSLContext | None:
        server = self.settings.server
        if not server.tls_cert and not server.tls_key:
            return None
        if not (server.tls_cert and server.tls_key):
            raise ValueError("TLS needs both server.tls_cert and server.tls_key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(server.tls_cert, server.tls_key)
        return context

    def _authorized(self, request: Request, query: dict[str, list[str]]) -> bool:
        token = self.settings.server.token
        if not token:
            return True
        offered = None
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            offered = auth[7:].strip()
        elif query.get("token"):
            offered = query["token"][0]
        return offered is not None and hmac.compare_digest(offered.encode(), token.encode())

    def _origin_allowed(self, request: Request) -> bool:
        allowed = self.settings.server.allowed_origins
        origin = request.headers.get("Origin")
        if not allowed or origin is None:  # non-browser clients send no Origin
            return True
        return origin in allowed or "*" in allowed

    def _refuse(self, status: int, reason: str, message: str) -> Response:
        self.metrics.connections_refused.inc(reason=reason)
        log.info("refused %s: %s", reason, message)
        extra = {"WWW-Authenticate": 'Bearer realm="conformer-streamer"'} if status == 401 else None
        if status == 503:
            extra = {"Retry-After": "5"}
        return http_routes.text(status, message, extra)

    def _admit(
        self, conn: ServerConnection, request: Request, query: dict[str, list[str]]
    ) -> Response | None:
        if not self._origin_allowed(request):
            return self._refuse(403, "origin", "origin not allowed")
        if not self._authorized(request, query):
            return self._refuse(401, "unauthorized", "missing or wrong token")
        if self.stopping:
            return self._refuse(503, "shutdown", "server shutting down")
        if len(self.sessions) >= self.settings.limits.max_connections:
            return self._refuse(503, "max_connections", "too many connections, try again later")
        return None

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        if _is_upgrade(request):
            if path not in WS_ROUTES:
                return http_routes.text(404, "no websocket endpoint here (try /v1/stream or /v1/listen)")
            return self._admit(conn, request, query)
        # plain HTTP
        if path == "/healthz":
            return self._healthz()
        if path == "/metrics":
            if not self._authorized(request, query):
                return self._refuse(401, "unauthorized", "missing or wrong token")
            return http_routes.metrics_response(self.metrics.render())
        if path in ("/", "/index.html"):
            return http_routes.static_file(self.static_dir, "index.html")
        if path.startswith("/static/"):
            return http_routes.static_file(self.static_dir, path[len("/static/") :])
        return http_routes.text(404, "not found")

    def vosk_process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if not _is_upgrade(request):
            if unquote(url.path) == "/healthz":
                return self._healthz()
            return http_routes.text(426, "this port speaks the vosk-server websocket protocol")
        return self._admit(conn, request, parse_qs(url.query))

    def _healthz(self) -> Response:
        alive = self.engine_is_alive()
        stats = self._engine_stats()
        body: dict[str, Any] = {
            "status": "stopping" if self.stopping else ("ok" if alive else "engine_dead"),
            "engine_alive": alive,
            "model": str(getattr(self.engine, "model_name", "")),
            "connections": len(self.sessions),
            "streams_active": int(self.metrics.streams_active.value()),
            "uptime_s": round(time.monotonic() - self.started_at, 3),
        }
        if stats is not None:
            for name in ("active_streams", "audio_seconds", "compute_seconds", "batches"):
                if hasattr(stats, name):
                    body[f"engine_{name}"] = getattr(stats, name)
        if self.mic is not None:
            body["mic"] = {"capturing": self.mic.capturing, "errors": self.mic.errors[-3:]}
        status = 200 if alive and not self.stopping else 503
        return http_routes.json_response(status, body)

    # ------------------------------------------------------------------ connections
    async def _handle(self, ws: ServerConnection) -> None:
        path = unquote(urlsplit(ws.request.path).path) if ws.request else "/"
        await self._run_session(WS_ROUTES.get(path, NativeSession)(self, ws))

    async def _handle_vosk(self, ws: ServerConnection) -> None:
        await self._run_session(VoskSession(self, ws))

    async def _run_session(self, session: WebSocketSession) -> None:
        endpoint = session.endpoint
        if len(self.sessions) >= self.settings.limits.max_connections:  # raced past process_request
            self.metrics.connections_refused.inc(reason="max_connections")
            await session.fail(
                "server_busy", "too many connections, try again later", CloseCode.TRY_AGAIN_LATER
            )
            return
        if session.engine_down():  # the inference worker died: tell the client to come back later
            await session.fail("unavailable", ENGINE_DOWN, CloseCode.TRY_AGAIN_LATER)
            return
        self.sessions.add(session)
        self.metrics.connections_active.inc(endpoint=endpoint)
        self.metrics.connections_total.inc(endpoint=endpoint)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self.metrics.connections_active.dec(endpoint=endpoint)
            session.release()

    def _serve_kwargs(self) -> dict[str, Any]:
        limits = self.settings.limits
        return {
            "open_timeout": limits.handshake_timeout_s if limits.handshake_timeout_s > 0 else None,
            # frames between max_frame_bytes and 4x get an error event + 1009 from the session; beyond,
            # the websockets library closes with 1009 itself without buffering them.
            "max_size": 4 * limits.max_frame_bytes,
            "max_queue": 32,
            "ping_interval": 20,
            "ping_timeout": 20,
            "close_timeout": 5,
            "ssl": self._ssl_context(),
            "server_header": "conformer-streamer",
            "compression": None,  # PCM barely compresses; deflate would only cost CPU
        }

    # ------------------------------------------------------------------ lifecycle
    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        """Listen (on ``sockets`` when socket-activated: the first is the main port, a second the vosk port)."""
        server = self.settings.server
        kwargs = self._serve_kwargs()
        sockets = list(sockets or [])
        if sockets:
            self.server = await serve(
                self._handle, sock=sockets[0], process_request=self.process_request, **kwargs
            )
        else:
            self.server = await serve(
                self._handle, server.host, server.port, process_request=self.process_request, **kwargs
            )
        if len(sockets) > 1:
            self.vosk_server = await serve(
                self._handle_vosk, sock=sockets[1], process_request=self.vosk_process_request, **kwargs
            )
        elif server.vosk_port is not None:
            self.vosk_server = await serve(
                self._handle_vosk,
                server.host,
                server.vosk_port,
                process_request=self.vosk_process_request,
                **kwargs,
            )
        if server.mic is not None:
            from .mic import MicSource

            factory = self._mic_factory or MicSource
            self.mic = factory(self, server.mic)
            self.mic.start()
        log.debug("listening on %s", ", ".join(self.addresses()))  # `serve` prints it

    def addresses(self) -> list[str]:
        scheme = "wss" if self.settings.server.tls_cert else "ws"
        out = []
        for name, srv in (("", self.server), ("vosk ", self.vosk_server)):
            if srv is None:
                continue
            for sock in srv.sockets:
                address = sock.getsockname()
                if isinstance(address, tuple):
                    out.append(f"{name}{scheme}://{address[0]}:{address[1]}")
                else:
                    out.append(f"{name}{address}")
        return out

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    @property
    def vosk_port(self) -> int | None:
        if self.vosk_server is None:
            return None
        return self.vosk_server.sockets[0].getsockname()[1]

    async def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop: refuse new connections, finish open utterances (finals sent), close clients."""
        if self.stopping:
            return
        self.stopping = True
        servers = [s for s in (self.server, self.vosk_server) if s is not None]
        for srv in servers:
            srv.server.close()  # stop accepting; open connections stay up
        # Streams finish their open utterances (finals, then "end") while the microphone does the same
        # for the listeners; listeners are closed last so that they get the microphone's final.
        tasks = [
            asyncio.create_task(s.shutdown()) for s in list(self.sessions) if not isinstance(s, ListenSession)
        ]
        if self.mic is not None:
            tasks.append(asyncio.create_task(self.mic.stop(drain=True)))
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        self.hub.close_all()  # each listener sends what is queued, then closes 1001
        listeners = [s for s in self.sessions if isinstance(s, ListenSession)]
        deadline = time.monotonic() + 5.0
        while any(s in self.sessions for s in listeners) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for srv in servers:
            srv.close(close_connections=True, code=CloseCode.GOING_AWAY, reason="server shutting down")
        for srv in servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await srv.wait_closed()
