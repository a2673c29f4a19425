"""One GET to Upbit, sent as a chain of steps (the I/O half of ``Client``).

Each step handles one concern and hands the rest on: retries → circuit breaker → rate
budget → send, and the answer's status back up the chain. A retryable outcome comes back
as (error, back off?) instead of being raised; the last one is raised once the attempts
are used up. ``Client`` decides what to ask (endpoints, parameters, decoding) and shares
identical requests in flight; this decides how one request reaches upstream and counts
what happened to it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx

from .._budget.local import GROUPS, group_of
from .._budget.rules import RateBudget
from ..errors import CircuitOpenError, ClosedError, RetryLaterError, UpstreamError
from .circuit import CircuitBreaker
from .connections import LIMITS, ConnectionEnded, Connections, Transports
from .flight import Flight, acquire_at_flight_priority
from .latency import LatencyTimeout
from .replies import block_seconds, learn_from_reply, send_get, status_error
from .retry import RetryPolicy, Tally
from .upstream_clock import UpstreamClock

__all__ = ["Params", "RequestChain"]


log = logging.getLogger("marketspine.client")

Params = tuple[tuple[str, str], ...]
# A retryable outcome of one attempt: the error, and whether to back off before the next.
_Retry = tuple[RetryLaterError, bool]


class RequestChain:
    """Sends GETs to ``base_url`` through ``breaker`` and ``budget``, retrying as ``retry``
    says, each attempt bounded by ``timeouts``; replies teach the budget and
    ``upstream_clock``. The counters are public for ``Client.statistics``."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: Transports,
        timeout: float,
        timeouts: LatencyTimeout,
        retry: RetryPolicy,
        budget: RateBudget,
        breaker: CircuitBreaker,
        upstream_clock: UpstreamClock,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        rng: Callable[[], float],
    ) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._timeouts = timeouts
        self._retry = retry
        self._budget = budget
        self._breaker = breaker
        self._upstream_clock = upstream_clock
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._connections = Connections(self._new_http, transport)
        self._last_failure: str | None = None  # why upstream failed last, for open-circuit errors
        self.sent: Counter[str] = Counter()  # per budget group
        self.retries = 0
        self.rate_limited = 0
        self.banned = 0
        self.failed = 0
        self.timed_out = 0

    def open(self) -> None:
        """Make the HTTP connection pool (``Client`` entering ``async with``)."""
        self._connections.open()

    def _new_http(self, transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self._base_url,
            transport=transport,
            timeout=self._timeout,
            # No Origin header ever: Upbit limits requests that carry one to 1 per 10 s.
            headers={
                "Accept": "application/json",
                "Accept-Encoding": "gzip",
                "User-Agent": "marketspine",
            },
            follow_redirects=False,
            # What ``upstream_transport`` does, for the transports httpx makes itself to
            # reach a proxy (HTTPS_PROXY).
            http2=True,
            limits=LIMITS,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections (idempotent)."""
        await self._connections.aclose()

    @property
    def connections_retired(self) -> int:
        """HTTP/2 connections left for new ones after a request on them was given up on."""
        return self._connections.retired

    async def fetch(self, path: str, params: Params, flight: Flight) -> bytes:
        """One request with retries; raises the last error once the attempts are used up,
        ClosedError when not open."""
        if not self._connections.is_open:
            raise ClosedError("the Client is not open: use it as `async with Client(...)`")
        tally = Tally(self._retry, path)
        attempts = self._retry.attempts
        error: RetryLaterError | None = None
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self.retries += 1
            outcome = await self._send_handling_breaker(path, params, flight, tally, attempt)
            if isinstance(outcome, bytes):
                return outcome
            error, back_off = outcome
            if back_off and attempt < attempts:
                await self._sleep(self._retry.backoff(tally.failures, self._rng()))
        self.failed += 1
        assert error is not None  # at least one attempt ran and failed
        raise error

    async def _send_handling_breaker(
        self, path: str, params: Params, flight: Flight, tally: Tally, attempt: int
    ) -> bytes | _Retry:
        """Refuse while the breaker is open; tell it how the attempt ended."""
        try:
            self._breaker.before_call()
        except UpstreamError as exc:
            self.failed += 1
            if not isinstance(exc, CircuitOpenError) or self._last_failure is None:
                raise
            # The root cause first: "connection refused", not only "circuit open"; and this
            # request named when the failure was another's.
            cause = self._last_failure
            if not cause.startswith(f"GET {path} failed"):
                cause = f"GET {path} not sent, upstream failing: {cause}"
            raise CircuitOpenError(f"{cause}; {exc}", retry_after=exc.retry_after) from exc
        try:
            response = await self._send_handling_budget(path, params, flight)
        except ConnectionEnded as exc:
            # Not upstream failing: a connection it was done with. Again at once, on a new
            # one (the budget still spaces the attempt); a new connection failing counts.
            self._breaker.record_abandoned()
            exc.add_note(f"attempt {attempt} of {self._retry.attempts}")
            return exc, False
        except UpstreamError as exc:
            self._breaker.record_failure()
            self._last_failure = str(exc)
            tally.failures += 1
            exc.add_note(f"attempt {attempt} of {self._retry.attempts}")
            return exc, True
        except BaseException:
            self._breaker.record_abandoned()
            raise
        status = response.status_code
        if status >= 500:
            # Named by its request: a 5xx only this request gets never opens the circuit.
            self._breaker.record_failure((path, params))
            self._last_failure = f"GET {path} failed: {self._base_url} answered {status}"
            return tally.server_error(self._last_failure, attempt), True
        self._breaker.record_success()  # upstream answered: it is up
        self._last_failure = None
        return self._handle_status(path, params, response, tally, attempt)

    async def _send_handling_budget(
        self, path: str, params: Params, flight: Flight
    ) -> httpx.Response:
        """Wait for the budget, send, and reconcile the budget and clock with the reply."""
        group = group_of(path)
        await acquire_at_flight_priority(self._budget, group, flight)
        sent_at = self._clock()
        self.sent[group] += 1
        limit_s = self._timeouts.seconds

        def on_timeout() -> None:
            self.timed_out += 1
            self._timeouts.timed_out(limit_s)

        try:
            response = await self._connections.send(
                lambda http: send_get(http, path, params, limit_s, self._base_url, on_timeout)
            )
        except UpstreamError:
            # A hung or failed request may still have reached upstream, as late as now: the
            # budget counts it then, as it counts a late reply (a refused one costs nothing).
            self._budget.observe(group, None, sent_at=sent_at)
            raise
        rtt_s = self._clock() - sent_at
        self._timeouts.observe(rtt_s)
        learn_from_reply(response, group, sent_at, rtt_s, self._budget, self._upstream_clock)
        return response

    def _handle_status(
        self, path: str, params: Params, response: httpx.Response, tally: Tally, attempt: int
    ) -> bytes | _Retry:
        """The body of a 200; a 429 or a short 418 to retry (the budget holds the retry
        back); raises for other answers."""
        status = response.status_code
        policy = self._retry
        group = group_of(path)
        if status == 200:
            return response.content
        if status == 429:
            self.rate_limited += 1
            log.info(
                "Upbit answered 429 (too many requests) to GET %s; the %s group is held back",
                path, group,
                extra={"event": "rate_limited", "key": f"{self._base_url} {group}"},
            )  # fmt: skip
            limited = tally.rate_limited_error(group, attempt)
            # The budget holds the whole group back; the retry waits in the budget step.
            self._budget.penalize(group, limited.retry_after or 0.0)
            return limited, False
        if status == 418:
            self.banned += 1
            told = block_seconds(response)
            error = tally.banned_error(told)
            block = error.retry_after or 0.0
            ban = {"event": "ban", "key": self._base_url, "seconds": round(block)}
            if block > policy.max_ban_wait:
                # INFO: the BannedError raised below tells stderr; alerts take INFO.
                log.info(
                    "Upbit blocked this IP (418) for %.0f s; failing fast (GET %s)",
                    block, path, extra=ban,
                )  # fmt: skip
                self.failed += 1
                # Too long to wait out: fail fast (callers answer from cache) until it ends.
                self._breaker.trip(block)
                raise error
            log.warning(
                "Upbit blocked this IP (418) for %.0f s%s; waiting it out before retrying GET %s",
                block,
                "" if told is not None else " (no block time given: backing off)",
                path,
                extra=ban,
            )
            for name in GROUPS:  # the block covers the IP, every group
                self._budget.penalize(name, block)
            return error, False
        self.failed += 1
        raise status_error(path, params, response)
