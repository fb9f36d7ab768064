"""Plain HTTP on the websocket port: ``/healthz``, ``/metrics``, ``/`` and ``/static/<file>``."""

from __future__ import annotations

import email.utils
import http
import json
import mimetypes
from pathlib import Path
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Response

from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

# clients/web/ next to the streamer package (source checkout or installed package data)
DEFAULT_STATIC_DIR = Path(__file__).resolve().parents[2] / "clients" / "web"


def response(
    status: int, body: bytes | str, content_type: str, extra: dict[str, str] | None = None
) -> Response:
    status_ = http.HTTPStatus(status)
    data = body.encode() if isinstance(body, str) else body
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(data))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    for key, value in (extra or {}).items():
        headers[key] = value
    return Response(status_.value, status_.phrase, headers, data)


def text(status: int, message: str, extra: dict[str, str] | None = None) -> Response:
    return response(
        status, message if message.endswith("\n") else message + "\n", "text/plain; charset=utf-8", extra
    )


def json_response(status: int, obj: Any) -> Response:
    return response(status, json.dumps(obj, indent=1) + "\n", "application/json")


def metrics_response(body: str) -> Response:
    return response(200, body, METRICS_CONTENT_TYPE)


def static_file(static_dir: Path, name: str) -> Response:
    """Serve ``static_dir/name`` without ever leaving ``static_dir`` (no ``..``, no absolute paths, no links out)."""
    base = static_dir.resolve()
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return text(404, "not found")
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return text(404, "not found")
    try:
        path = (base / name).resolve()
        path.relative_to(base)
    except (ValueError, OSError):
        return text(404, "not found")
    if not path.is_file():
        return text(404, "not found")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type in ("application/javascript", "application/json"):
        content_type += "; charset=utf-8"
    return response(200, path.read_bytes(), content_type)
