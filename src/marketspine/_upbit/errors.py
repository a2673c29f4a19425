"""Error replies in Upbit's shape, for the apps that answer as Upbit does: ``serve`` and the
simulator."""

from __future__ import annotations

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["method_not_allowed", "upbit_error"]

_encode = msgspec.json.Encoder().encode


def upbit_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """Upbit's error body: ``{"error":{"name":<status>,"message":...}}``."""
    body = _encode({"error": {"name": status, "message": message}})
    return Response(body, status, headers=headers, media_type="application/json")


def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 for a known path asked with a method it does not take: Upbit's error shape with
    Starlette's ``Allow`` header, the message naming the methods the path accepts."""
    headers = exc.headers if isinstance(exc, HTTPException) and exc.headers else {}
    allowed = ", ".join(sorted(headers.get("Allow", "").split(", ")))
    message = f"{request.method} {request.url.path} is not allowed: it accepts {allowed}"
    return upbit_error(405, message, dict(headers))
