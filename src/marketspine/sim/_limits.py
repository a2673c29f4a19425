"""Upbit's per-IP request limits, as the simulator enforces them (pure: the clock is injected).

Rules (API.md §3; the parts Upbit does not document are our choice, stated here):

* Each client (IP) has its own budget per group (market, candles, trade, ticker, orderbook).
  Windows are **fixed one-second windows** of the limiter's clock (``floor(t)``), not sliding.
  A request is counted in the window of its arrival, which the caller may state: requests
  checked a little out of arrival order each still count in their own window.
* A request over the budget is answered 429 (a *strike*). Strikes count while a client keeps
  sending: a full second without a 429 forgets them. ``STRIKES_BEFORE_BLOCK`` strikes block
  the client — every group, Origin included — with 418 for ``FIRST_BLOCK_S`` seconds,
  doubling with each further block (at most ``MAX_BLOCK_S``). Requests during a block
  do not extend it. Blocks are forgotten after ``FORGIVE_AFTER_S`` quiet seconds.
* A request carrying an ``Origin`` header is counted in group ``origin`` instead:
  one request per fixed ten-second window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._upbit.limits import WS_CONNECTS_PER_S, WS_MESSAGES_PER_MIN, WS_MESSAGES_PER_S

__all__ = [
    "FIRST_BLOCK_S",
    "MAX_BLOCK_S",
    "ORIGIN_GROUP",
    "STRIKES_BEFORE_BLOCK",
    "ConnectLimiter",
    "MessageLimiter",
    "RateLimiter",
    "Rejection",
    "Verdict",
]

ORIGIN_GROUP = "origin"
ORIGIN_WINDOW_S = 10.0
STRIKES_BEFORE_BLOCK = 10
FIRST_BLOCK_S = 1.0
MAX_BLOCK_S = 600.0
FORGIVE_AFTER_S = 300.0
# Windows counted per (client, group): the current one and a few before it, for requests
# checked after a later one (a busy event loop wakes their latency waits late).
_KEPT_WINDOWS = 4
_KEPT_REJECTIONS = 20  # the latest 429s, for /sim/stats


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one request: ``status`` 200 (serve it), 429 or 418."""

    status: int
    group: str  # the group the request was counted in (``origin`` for Origin requests)
    remaining: int  # requests left in this window, for Remaining-Req ``sec``
    blocked_for_s: float = 0.0  # for 418: seconds until the block ends


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request answered 429, with the arrivals that had filled its window: whether a
    client sent too much or the simulator stamped late shows in their times."""

    at: float  # its arrival on the limiter's clock
    client: str
    source: str  # who within the client sent it (the simulator gives the peer's port)
    group: str
    counted: tuple[tuple[float, str], ...]  # (arrival, source) of each one its window holds

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "client": self.client,
            "source": self.source,
            "group": self.group,
            "counted": [list(arrival) for arrival in self.counted],
        }


@dataclass(slots=True)
class _Client:
    strikes: int = 0
    last_strike_at: float = -math.inf
    blocks: int = 0
    blocked_until: float = -math.inf


class RateLimiter:
    """Fixed-window request counting per (client, group), with 429 strikes and 418 blocks.

    ``clock`` returns seconds (default ``time.monotonic``); it is real time, not simulated time,
    because Upbit limits requests per real second however fast the simulated market runs.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # -> {window index: [(arrival, source), ...]} of the newest windows (_KEPT_WINDOWS)
        self._windows: dict[tuple[str, str], dict[int, list[tuple[float, str]]]] = {}
        self._clients: dict[str, _Client] = {}
        self.rejections: deque[Rejection] = deque(maxlen=_KEPT_REJECTIONS)

    def check(
        self,
        client: str,
        group: str,
        limit: int,
        *,
        origin: bool = False,
        at: float | None = None,
        source: str = "",
    ) -> Verdict:
        """Count one request of ``client`` in ``group`` (``origin``: it carried an Origin
        header) against ``limit`` requests per second, and say how to answer it. ``at`` is
        when it arrived on the limiter's clock (default: now); ``source`` names its sender
        within the client in ``rejections``."""
        now = self._clock() if at is None else at
        state = self._clients.get(client)
        if state is not None and now < state.blocked_until:
            return Verdict(418, group, 0, state.blocked_until - now)
        if origin:
            group, limit, window = ORIGIN_GROUP, 1, math.floor(now / ORIGIN_WINDOW_S)
        else:
            window = math.floor(now)
        windows = self._windows.setdefault((client, group), {})
        arrivals = windows.setdefault(window, [])
        if len(windows) > _KEPT_WINDOWS:
            del windows[min(windows)]
        if len(arrivals) < limit:
            arrivals.append((now, source))
            return Verdict(200, group, limit - len(arrivals))
        self.rejections.append(Rejection(now, client, source, group, tuple(arrivals)))
        return self._strike(client, group, now)

    def _strike(self, client: str, group: str, now: float) -> Verdict:
        state = self._clients.setdefault(client, _Client())
        if now - state.last_strike_at > 1.0:
            state.strikes = 0
        if now - max(state.last_strike_at, state.blocked_until) > FORGIVE_AFTER_S:
            state.blocks = 0
        state.strikes += 1
        state.last_strike_at = now
        if state.strikes < STRIKES_BEFORE_BLOCK:
            return Verdict(429, group, 0)
        duration = min(FIRST_BLOCK_S * 2**state.blocks, MAX_BLOCK_S)
        state.blocks += 1
        state.strikes = 0
        state.blocked_until = now + duration
        return Verdict(418, group, 0, duration)

    def reset(self) -> None:
        """Forget every window, strike and block."""
        self._windows.clear()
        self._clients.clear()
        self.rejections.clear()


# -- WebSocket (API.md §3.4) -----------------------------------------------------------------

# The limits are Upbit's (``_upbit.limits``): WS_CONNECTS_PER_S, WS_MESSAGES_PER_S/_MIN.


class ConnectLimiter:
    """Connection attempts per client IP in a sliding one-second window."""

    def __init__(
        self, per_second: int = WS_CONNECTS_PER_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._per_second = per_second
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def admit(self, client: str) -> int | None:
        """Record an attempt from ``client``: returns how many more it may make this second,
        or None (not recorded) when it is over the limit."""
        now = self._clock()
        seen = self._seen.setdefault(client, deque())
        while seen and seen[0] <= now - 1.0:
            seen.popleft()
        if len(seen) >= self._per_second:
            return None
        seen.append(now)
        if len(self._seen) > 10_000:  # forget idle clients so the table stays bounded
            self._seen = {ip: q for ip, q in self._seen.items() if q and q[-1] > now - 1.0}
        return self._per_second - len(seen)


class MessageLimiter:
    """Request messages on one connection: WS_MESSAGES_PER_S per second and
    WS_MESSAGES_PER_MIN per minute, both sliding windows."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Record a message at ``now`` (real seconds); returns False when it is over a limit
        (refused messages are not counted)."""
        times = self._times
        while times and times[0] <= now - 60.0:
            times.popleft()
        last_second = 0
        for t in reversed(times):
            if t <= now - 1.0:
                break
            last_second += 1
        if len(times) >= WS_MESSAGES_PER_MIN or last_second >= WS_MESSAGES_PER_S:
            return False
        times.append(now)
        return True
