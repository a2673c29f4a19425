"""Who may use the admin page: login with the admin token, sessions, CSRF tokens and the
slow-down of repeated failed logins. Pure bookkeeping with an injectable clock; the routes
in ``_serve.admin_page`` do the HTTP.

- A login compares SHA-256 digests of the given and the right token with
  ``hmac.compare_digest``: the time taken depends on neither the token's length nor how
  much of it was right, so a wrong token is refused with the same timing as a right one.
- A session lives ``session_s`` seconds; each has its own CSRF token, which every
  state-changing request must echo in ``X-CSRF-Token``.
- After ``free_failures`` failed logins from one client address, each further attempt must
  wait a lock-out that doubles per failure (capped); a success clears the count. Wrong
  bearer tokens count here too (``_serve.admin_api``). Addresses are counted separately, so
  a lock-out caused from one never refuses another; at most ``max_clients`` are tracked.
  A browser that has logged in before is counted under its device cookie instead (OWASP's
  device cookies): failures of others on its address never lock it out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DEVICE_COOKIE",
    "DEVICE_S",
    "AdminSessions",
    "LoginThrottle",
    "Session",
    "device_cookie",
    "device_of",
    "tokens_match",
]

SESSION_S = 12 * 3600.0
COOKIE = "marketspine_admin"
# A browser that has logged in once carries a device cookie signed with the admin token; its
# later logins are throttled under that device, never under the address others share.
DEVICE_COOKIE = "marketspine_device"
DEVICE_S = 365 * 86400


def tokens_match(given: str, token: str) -> bool:
    """Whether ``given`` is ``token``, in time independent of both."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(token.encode()).digest()
    )


def _device_mac(device: str, token: str) -> str:
    return hmac.new(token.encode(), b"marketspine device " + device.encode(), "sha256").hexdigest()


def device_cookie(token: str) -> str:
    """A new device cookie value: a random id and its MAC under the admin ``token`` (so a
    new token forgets every device)."""
    device = secrets.token_urlsafe(16)
    return f"{device}.{_device_mac(device, token)}"


def device_of(cookie: str | None, token: str) -> str | None:
    """The device id of a device cookie made with ``token``; None for none or a forged one."""
    if not cookie or len(cookie) > 200:
        return None
    device, dot, mac = cookie.partition(".")
    if not dot or not device:
        return None
    return device if hmac.compare_digest(mac, _device_mac(device, token)) else None


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str
    expires_at: float  # on the sessions' clock


class AdminSessions:
    """Logged-in browser sessions, kept in memory (a restart logs everyone out)."""

    def __init__(
        self, *, session_s: float = SESSION_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.session_s = session_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def open(self) -> Session:
        self._forget_expired()
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires_at=self._clock() + self.session_s,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of that id, or None (unknown, expired or logged out)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return given is not None and tokens_match(given, session.csrf)

    def _forget_expired(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]


class LoginThrottle:
    """Failed logins per client; ``wait_s(client)`` is how long that client must wait
    before its next attempt is even checked (0 when it may try now)."""

    def __init__(
        self,
        *,
        free_failures: int = 3,
        first_lockout_s: float = 1.0,
        max_lockout_s: float = 300.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.max_clients = max_clients
        self.first_lockout_s = first_lockout_s
        self.max_lockout_s = max_lockout_s
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (count, locked until)

    def wait_s(self, client: str) -> float:
        held = self._failures.get(client)
        if held is None:
            return 0.0
        return max(0.0, held[1] - self._clock())

    def failed(self, client: str) -> float:
        """Count a failure; returns the lock-out it starts (0 while failures are free)."""
        count = self._failures.get(client, (0, 0.0))[0] + 1
        over = count - self.free_failures
        lockout = (
            0.0 if over <= 0 else min(self.max_lockout_s, self.first_lockout_s * 2 ** (over - 1))
        )
        self._failures.pop(client, None)  # re-inserted: the dict's order is last failure's
        self._failures[client] = (count, self._clock() + lockout)
        if len(self._failures) > self.max_clients:  # a flood of addresses must not grow it
            self._forget_unlocked()
            while len(self._failures) > self.max_clients:  # all locked: oldest failure out
                del self._failures[next(iter(self._failures))]
        return lockout

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _forget_unlocked(self) -> None:
        now = self._clock()
        for key in [k for k, (_, until) in self._failures.items() if until <= now]:
            del self._failures[key]
