"""``serve``'s admin API and its bearer token.

The token comes from ``--admin-token``, else ``MARKETSPINE_ADMIN_TOKEN``, else a file next
to the database (created at first start with 0600 permissions, the token printed once).
A request without the right ``Authorization: Bearer <token>`` gets 401 and changes nothing.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import InvalidRequestError

if TYPE_CHECKING:
    from .admin_page import AdminPage
    from .service import ServeService

__all__ = ["ENV_TOKEN", "admin_routes", "authorized", "resolve_token", "token_path"]

ENV_TOKEN = "MARKETSPINE_ADMIN_TOKEN"


def token_path(db: Path) -> Path:
    """Where a generated token is kept: beside the database."""
    return db.with_name(db.name + ".admin-token")


def resolve_token(given: str | None, db: Path | None) -> tuple[str, bool]:
    """The admin token and whether it was generated just now (then print it, once).

    Raises InvalidRequestError for an empty token."""
    if given is None:
        given = os.environ.get(ENV_TOKEN) or None
    if given is not None:
        if not given.strip():
            raise InvalidRequestError("--admin-token is empty: give a non-empty token")
        return given.strip(), False
    if db is None:
        return secrets.token_urlsafe(24), True
    path = token_path(db)
    try:
        stored = path.read_text().strip()
    except FileNotFoundError:
        stored = ""
    if stored:
        return stored, False
    token = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.chmod(path, 0o600)
    return token, True


def authorized(request: Request, token: str) -> bool:
    """True when the request carries ``Authorization: Bearer <token>`` (constant-time)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value:
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def _unauthorized() -> Response:
    body = msgspec.json.encode(
        {"error": {"name": 401, "message": "Authorization: Bearer <admin token> required"}}
    )
    return Response(
        body, 401, media_type="application/json", headers={"WWW-Authenticate": "Bearer"}
    )


def admin_routes(service: ServeService, page: AdminPage | None = None) -> list[BaseRoute]:
    """The admin API: the bearer token (scripts) or, with ``page``, a logged-in browser
    session that sends its CSRF token."""

    async def refresh_market_info(request: Request) -> Response:
        if not authorized(request, service.admin_token):
            if page is None or page.session_of(request) is None:
                return _unauthorized()
            refused = page.may_change(request)
            if refused is not None:
                return refused
        report = await service.warmup()
        return Response(msgspec.json.encode(report), media_type="application/json")

    return [Route("/admin/api/refresh-market-info", refresh_market_info, methods=["POST"])]
