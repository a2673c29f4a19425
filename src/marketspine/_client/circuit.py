"""A circuit breaker for one upstream (pure state machine; the clock is injected).

    closed ──N consecutive failures──▶ open ──cool-down over──▶ half-open
      ▲                                  ▲                          │ exactly one probe
      └───────── probe succeeded ────────┼──────────────────────────┤
                                         └──── probe failed ────────┘

While open, calls fail fast with CircuitOpenError so callers can answer from cache
(flagged stale) instead of piling requests onto a failing upstream.

What counts as a failure: upstream failing, not one request failing. A failure without a
request (a timeout, a refused connection) counts every time; a 5xx answer names its
request, and counts once per distinct request in a run of failures: a request upstream
cannot answer (a 5xx reproducible for it, retried or asked again) adds one failure however
often it fails, so one client's odd request never opens the circuit for everyone. A 4xx is
upstream working (``record_success``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal

from ..errors import CircuitOpenError, InvalidRequestError

__all__ = [
    "DEFAULT_COOL_DOWN",
    "DEFAULT_FAILURE_THRESHOLD",
    "BreakerState",
    "BreakerStatistics",
    "CircuitBreaker",
]

log = logging.getLogger("marketspine.client")

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_COOL_DOWN = 10.0

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerStatistics:
    """The breaker at the moment of asking."""

    state: BreakerState
    consecutive_failures: int
    opened: int  # how many times it has opened
    rejected: int  # calls refused while open or while the probe was out
    retry_after: float  # seconds until a probe may go (0 unless open)


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``cool_down`` seconds
    lets exactly one probe through, whose outcome closes it or opens it again.

    Use: ``before_call()`` (raises CircuitOpenError when the call must not go), then exactly
    one of ``record_success()``, ``record_failure(request)`` or ``record_abandoned()`` (the
    call ended without telling whether upstream works, e.g. it was cancelled).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cool_down: float = DEFAULT_COOL_DOWN,
        name: str = "upstream",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cool_down < 0:
            raise InvalidRequestError("failure_threshold must be >= 1 and cool_down >= 0 s")
        self._threshold = failure_threshold
        self._cool_down = cool_down
        self._open_for = cool_down  # this opening's cool-down (longer after a trip)
        self._name = name
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        # The requests whose failure is counted in this run of failures (cleared on success).
        self._failed_requests: set[Hashable] = set()
        self._opened_at = 0.0
        self._probe_out = False
        self._opened = 0
        self._rejected = 0

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open`` (an open breaker past its cool-down reads
        ``half_open``: the next call is the probe)."""
        if self._state == "open" and self._clock() - self._opened_at >= self._open_for:
            return "half_open"
        return self._state

    def before_call(self) -> None:
        """Allow one call, or raise CircuitOpenError (with ``retry_after`` seconds) while the
        breaker is open or a half-open probe is already out."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and not self._probe_out:
            self._state = "half_open"
            self._probe_out = True
            return
        self._rejected += 1
        if state == "half_open":
            raise CircuitOpenError(
                f"circuit to {self._name} is half-open and its one probe is still out; "
                "failing fast until the probe answers (answer from cache if you can)",
                retry_after=0.0,
            )
        wait = self._retry_after()
        raise CircuitOpenError(
            f"circuit to {self._name} is open after {self._failures} consecutive failures; "
            f"failing fast for {wait:.1f} s more (answer from cache if you can)",
            retry_after=wait,
        )

    def record_success(self) -> None:
        """The call reached a working upstream: close the breaker."""
        if self._state != "closed":
            log.info(
                "circuit to %s closed: upstream answers again",
                self._name,
                extra={"event": "circuit_closed", "key": self._name},
            )
        self._state = "closed"
        self._failures = 0
        self._failed_requests.clear()
        self._probe_out = False

    def record_failure(self, request: Hashable | None = None) -> None:
        """The call failed: count it, open when due. ``request`` names the request when the
        failure may be its own (a 5xx answer): then it counts only the first time that
        request fails in this run of failures (a failed half-open probe reopens anyway)."""
        if request is not None and self._state == "closed":
            if request in self._failed_requests:
                self._probe_out = False
                return  # reproducible for this request: not evidence that upstream is down
            if len(self._failed_requests) < self._threshold:  # bounded by the threshold
                self._failed_requests.add(request)
        self._failures += 1
        # A call that was already out when the breaker opened does not extend the cool-down.
        if self._state != "open" and (
            self._state == "half_open" or self._failures >= self._threshold
        ):
            self._opened += 1
            self._state = "open"
            self._opened_at = self._clock()
            self._open_for = self._cool_down
            # INFO: the failing call's own error says it on stderr already; alerts take INFO.
            log.info(
                "circuit to %s opened after %d consecutive failures: failing fast for %.0f s",
                self._name, self._failures, self._open_for,
                extra={"event": "circuit_open", "key": self._name, "failures": self._failures},
            )  # fmt: skip
        self._probe_out = False

    def trip(self, seconds: float) -> None:
        """Open now for ``seconds``: upstream said it will refuse us that long (a 418 block),
        so calls fail fast and callers answer from cache instead of hammering. Exactly that
        long, not the failures' cool-down: a client of ``serve`` is answered stale (or 503)
        while it is open, for no longer than the block."""
        if self.state != "open":
            self._opened += 1
            log.info(
                "circuit to %s opened for %.0f s: upstream refuses us that long",
                self._name, seconds,
                extra={"event": "circuit_open", "key": self._name, "seconds": round(seconds)},
            )  # fmt: skip
        self._state = "open"
        self._opened_at = self._clock()
        self._open_for = max(0.0, seconds)
        self._probe_out = False

    def record_abandoned(self) -> None:
        """The call ended without an outcome; a half-open breaker lets another probe go."""
        self._probe_out = False

    def _retry_after(self) -> float:
        if self._state != "open":
            return 0.0
        return max(0.0, self._opened_at + self._open_for - self._clock())

    def statistics(self) -> BreakerStatistics:
        """A snapshot of the breaker."""
        return BreakerStatistics(
            state=self.state,
            consecutive_failures=self._failures,
            opened=self._opened,
            rejected=self._rejected,
            retry_after=self._retry_after() if self.state == "open" else 0.0,
        )
