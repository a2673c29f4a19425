"""How long to wait for one request: a multiple of the recent round trips (pure).

A fixed 10 s timeout makes every hung request cost 10 s. Upstream's own latency says how
long an answer takes: waiting ``multiple`` × the recent p99 (never less than ``floor``,
never more than ``ceiling``) gives up on a hang within a second or two at ordinary
latency, while a slow but healthy upstream raises its own p99 and so its timeout.

Before that is known, a new process waits ``start`` rather than the ceiling: a first answer
comes well within it at any distance from Seoul (handshakes included), and a hang among the
first requests then costs ``start``, not the ceiling — under serve, whose clients wait at most
8 s, a hung first request and its retry fit in that wait. Each attempt given up on doubles it
(to the ceiling), so an upstream slower than ``start`` is still reached.
"""

from __future__ import annotations

from collections import deque

from ..errors import InvalidRequestError

__all__ = ["LatencyTimeout"]


class LatencyTimeout:
    """The per-attempt timeout from observed round trips. Until ``min_samples`` replies were
    seen it is ``start`` (doubled after each attempt given up on, at least ``multiple`` ×
    the slowest reply seen), never above ``ceiling``."""

    def __init__(
        self,
        *,
        ceiling: float,
        floor: float = 1.5,
        multiple: float = 10.0,
        samples: int = 200,
        min_samples: int = 10,
        start: float = 3.0,
    ) -> None:
        if not 0 < floor <= ceiling:
            raise InvalidRequestError(
                f"timeout floor must be > 0 s and at most the timeout, got {floor} and {ceiling}"
            )
        if multiple < 1:
            raise InvalidRequestError(f"timeout multiple must be >= 1, got {multiple}")
        self.ceiling = ceiling
        self.floor = floor
        self._multiple = multiple
        self._min_samples = min_samples
        self._seen: deque[float] = deque(maxlen=samples)
        self._unknown = min(start, ceiling)  # the timeout while too few replies were seen
        self._current = self._unknown

    def observe(self, seconds: float) -> None:
        """Record the round trip of one answered request (any status)."""
        self._seen.append(max(0.0, seconds))
        if len(self._seen) < self._min_samples:
            slowest = self._multiple * max(self._seen)
            self._current = min(self.ceiling, max(self._unknown, slowest))
            return
        ordered = sorted(self._seen)
        p99 = ordered[int(0.99 * (len(ordered) - 1))]
        self._current = min(self.ceiling, max(self.floor, self._multiple * p99))

    def timed_out(self, limit_s: float) -> None:
        """An attempt allowed ``limit_s`` was given up on. While too few replies were seen
        that may be a slow upstream rather than a hang: later attempts wait twice as long.
        Given the limit it had, requests timing out together double it once, not each."""
        if len(self._seen) >= self._min_samples:
            return  # the p99 of many replies says what a hang is
        self._unknown = min(self.ceiling, max(self._unknown, 2.0 * limit_s))
        self._current = max(self._current, self._unknown)

    @property
    def seconds(self) -> float:
        """The timeout for the next attempt."""
        return self._current
