"""``serve``'s admin API, its bearer tokens and who may use ``/api``.

The admin token comes from ``--admin-token``, else ``MARKETSPINE_ADMIN_TOKEN``, else a file
next to the database (created at first start with 0600 permissions, the token printed once).
A read-only token may be given with ``--read-token`` (or ``MARKETSPINE_READ_TOKEN``).

``ApiAccess`` is the rule of ``/api`` and the admin API: a read (GET, HEAD) takes the read
token, the admin token or a logged-in admin session; anything else (POST, DELETE) takes the
admin token, or a session with its CSRF token in ``X-CSRF-Token``. Without credentials:
401; with a read token, or a session without its CSRF token, on a change: 403. Nothing is
changed by a refused request.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
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

__all__ = [
    "ENV_READ_TOKEN",
    "ENV_TOKEN",
    "ApiAccess",
    "admin_routes",
    "authorized",
    "resolve_read_token",
    "resolve_token",
    "token_path",
]

ENV_TOKEN = "MARKETSPINE_ADMIN_TOKEN"
ENV_READ_TOKEN = "MARKETSPINE_READ_TOKEN"
_READS = frozenset({"GET", "HEAD"})


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


def resolve_read_token(given: str | None) -> str | None:
    """The read-only token: ``given``, else ``MARKETSPINE_READ_TOKEN``, else None (reads
    then need the admin token or a session).

    Raises InvalidRequestError for an empty token."""
    if given is None:
        given = os.environ.get(ENV_READ_TOKEN) or None
    if given is None:
        return None
    if not given.strip():
        raise InvalidRequestError("--read-token is empty: give a non-empty token")
    return given.strip()


def authorized(request: Request, token: str) -> bool:
    """True when the request carries ``Authorization: Bearer <token>`` (constant-time)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value:
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def _refused(status: int, message: str) -> Response:
    body = msgspec.json.encode({"error": {"name": status, "message": message}})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(body, status, media_type="application/json", headers=headers)


Endpoint = Callable[[Request], Awaitable[Response]]


class ApiAccess:
    """Who may read and who may change, over ``service``'s tokens and ``page``'s sessions
    (none without a page)."""

    def __init__(self, service: ServeService, page: AdminPage | None = None) -> None:
        self.service = service
        self.page = page

    def refusal(self, request: Request) -> Response | None:
        """None when ``request`` may do what its method asks; else the 401 or 403."""
        if authorized(request, self.service.admin_token):
            return None
        read_token = self.service.read_token
        by_read_token = read_token is not None and authorized(request, read_token)
        session = None if self.page is None else self.page.session_of(request)
        if request.method in _READS:
            if by_read_token or session is not None:
                return None
        elif by_read_token:
            return _refused(403, "the read-only token cannot change anything: use the admin token")
        elif session is not None and self.page is not None:
            return self.page.may_change(request)  # None with the session's CSRF token
        wanted = "<read or admin token>" if request.method in _READS else "<admin token>"
        return _refused(401, f"Authorization: Bearer {wanted} required")

    def guard(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint``, answering only requests ``refusal`` lets through."""

        async def guarded(request: Request) -> Response:
            refused = self.refusal(request)
            if refused is not None:
                return refused
            return await endpoint(request)

        return guarded


def admin_routes(service: ServeService, page: AdminPage | None = None) -> list[BaseRoute]:
    """The admin API: the admin token (scripts) or, with ``page``, a logged-in browser
    session that sends its CSRF token."""
    access = ApiAccess(service, page)

    async def refresh_market_info(request: Request) -> Response:
        report = await service.warmup()
        return Response(msgspec.json.encode(report), media_type="application/json")

    return [
        Route("/admin/api/refresh-market-info", access.guard(refresh_market_info), methods=["POST"])
    ]
