"""``serve``'s admin API, its bearer tokens and who may use ``/api``.

The admin token comes from ``--admin-token``, else ``MARKETSPINE_ADMIN_TOKEN``, else a file
next to the database (created at first start with 0600 permissions, the token printed once).
A read-only token may be given with ``--read-token`` (or ``MARKETSPINE_READ_TOKEN``). Every
token has at least ``MIN_TOKEN_CHARS`` characters.

``ApiAccess`` is the rule of ``/api`` and the admin API: a read (GET, HEAD) takes the read
token, the admin token or a logged-in admin session; anything else (POST, DELETE) takes the
admin token, or a session with its CSRF token in ``X-CSRF-Token``. Without credentials:
401; with a read token, or a session without its CSRF token, on a change: 403. Nothing is
changed by a refused request.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import InvalidRequestError
from .admin_auth import tokens_match
from .security import peer_of

if TYPE_CHECKING:
    from .admin_page import AdminPage
    from .service import ServeService

__all__ = [
    "ENV_READ_TOKEN",
    "ENV_TOKEN",
    "MIN_TOKEN_CHARS",
    "ApiAccess",
    "admin_routes",
    "authorized",
    "bearer_token",
    "given_admin_token",
    "resolve_read_token",
    "resolve_token",
    "token_path",
]

logger = logging.getLogger("marketspine.serve")

ENV_TOKEN = "MARKETSPINE_ADMIN_TOKEN"
ENV_READ_TOKEN = "MARKETSPINE_READ_TOKEN"
_READS = frozenset({"GET", "HEAD"})


def token_path(db: Path) -> Path:
    """Where a generated token is kept: beside the database."""
    return db.with_name(db.name + ".admin-token")


MIN_TOKEN_CHARS = 16
_SUGGEST = "python -c 'import secrets; print(secrets.token_urlsafe(24))' makes one"


def _checked(token: str, name: str) -> str:
    """``token`` stripped; raises InvalidRequestError when empty or shorter than
    MIN_TOKEN_CHARS (a short token falls to guessing, throttle or not)."""
    token = token.strip()
    if not token:
        raise InvalidRequestError(f"{name} is empty: give a token of {MIN_TOKEN_CHARS}+ characters")
    if len(token) < MIN_TOKEN_CHARS:
        raise InvalidRequestError(
            f"{name} is {len(token)} characters long: give at least {MIN_TOKEN_CHARS} ({_SUGGEST})"
        )
    return token


def _read_stored(path: Path) -> str | None:
    """The token kept in ``path`` (None when there is none), read without following a
    symbolic link; warns when others may read the file.

    Raises InvalidRequestError for a link, a non-regular file or one that cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symbolic link planted where the token belongs
        raise InvalidRequestError(
            f"cannot read the admin token file {path} ({exc.strerror or exc}; a symbolic "
            "link is never followed): remove it, or give --admin-token"
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidRequestError(
                f"the admin token file {path} is not a regular file: remove it, or give "
                "--admin-token"
            )
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd) as stored:
        if info.st_mode & 0o077:
            logger.warning(
                "the admin token file %s is readable or writable by others (mode %o): chmod 600 it",
                path,
                stat.S_IMODE(info.st_mode),
            )
        return stored.read(4096)


def given_admin_token(given: str | None) -> str | None:
    """The admin token given (``given``, else ``MARKETSPINE_ADMIN_TOKEN``), checked; None
    when neither gives one (one is then kept beside the database).

    Raises InvalidRequestError for an empty or short token."""
    if given is None:
        given = os.environ.get(ENV_TOKEN) or None
    return None if given is None else _checked(given, "--admin-token")


def resolve_token(given: str | None, db: Path | None) -> tuple[str, bool]:
    """The admin token and whether it was generated just now (then print it, once).

    A generated token is kept beside the database in a file created with ``O_EXCL`` and
    ``O_NOFOLLOW``, 0600 from the start: a file or link planted at that name is never
    written through, and the token is never readable by others, not even for an instant.

    Raises InvalidRequestError for an empty or short token (given or stored), or a token
    file that is a link, not a regular file, or unreadable."""
    given = given_admin_token(given)
    if given is not None:
        return given, False
    if db is None:
        return secrets.token_urlsafe(24), True
    path = token_path(db)
    stored = _read_stored(path)
    if stored is not None and stored.strip():
        return _checked(stored, f"the admin token in {path}"), False
    if stored is not None:  # an empty file (a start that died writing it): made anew
        path.unlink()
    token = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:  # made meanwhile (another serve, or a planted link): read that
        stored = _read_stored(path)
        if stored is None:
            raise InvalidRequestError(
                f"the admin token file {path} appeared and vanished: start serve again"
            ) from None
        return _checked(stored, f"the admin token in {path}"), False
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token, True


def resolve_read_token(given: str | None) -> str | None:
    """The read-only token: ``given``, else ``MARKETSPINE_READ_TOKEN``, else None (reads
    then need the admin token or a session).

    Raises InvalidRequestError for an empty or short token."""
    if given is None:
        given = os.environ.get(ENV_READ_TOKEN) or None
    if given is None:
        return None
    return _checked(given, "--read-token")


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, if the request carries one."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authorized(request: Request, token: str) -> bool:
    """True when the request carries ``Authorization: Bearer <token>`` (in time
    independent of both)."""
    given = bearer_token(request)
    return given is not None and tokens_match(given, token)


def _refused(status: int, message: str, *, retry_after: float = 0.0) -> Response:
    body = msgspec.json.encode({"error": {"name": status, "message": message}})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return Response(body, status, media_type="application/json", headers=headers)


Endpoint = Callable[[Request], Awaitable[Response]]


class ApiAccess:
    """Who may read and who may change, over ``service``'s tokens and ``page``'s sessions
    (none without a page).

    A bearer token is a login attempt like the page's: a wrong one counts against the
    client's address in the same ``LoginThrottle`` (``service.login_throttle``), and while
    that address is locked out its bearer requests are answered 429 unchecked. An address
    is the peer's (``--forwarded-allow-ips`` names a proxy whose client counts instead), so
    no other address's failures ever lock a client out."""

    def __init__(self, service: ServeService, page: AdminPage | None = None) -> None:
        self.service = service
        self.page = page

    def refusal(self, request: Request) -> Response | None:
        """None when ``request`` may do what its method asks; else the 401, 403 or 429."""
        given = bearer_token(request)
        by_read_token = False
        if given is not None:
            throttle = self.service.login_throttle
            client = peer_of(request)
            wait = throttle.wait_s(client)
            if wait > 0:
                return _refused(
                    429, f"too many wrong tokens from {client}: wait {wait:.0f} s", retry_after=wait
                )
            if tokens_match(given, self.service.admin_token):
                return None
            read_token = self.service.read_token
            by_read_token = read_token is not None and tokens_match(given, read_token)
            if not by_read_token:
                lockout = throttle.failed(client)
                wait_text = f": wait {lockout:.0f} s" if lockout else ""
                return _refused(401, f"wrong bearer token{wait_text}", retry_after=lockout)
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
