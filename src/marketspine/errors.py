"""One error hierarchy, grouped by what the caller does about the error.

    MarketspineError
    ├── InvalidRequestError      fix the request (bad timeframe, bad time, bad parameter)
    │   └── UnknownMarketError   the market does not exist (or was delisted)
    ├── RetryLaterError          transient: try again after ``retry_after`` seconds
    │   ├── RateLimitedError     upstream said 429
    │   ├── BannedError          upstream said 418: the IP is blocked for a while
    │   └── UpstreamError        upstream down: 5xx, timeout, connection failure
    │       └── CircuitOpenError the breaker is open; answer from cache if you can
    ├── StoreError               the local database cannot be used
    │   ├── StoreUnavailableError  unreachable for now (also a RetryLaterError): retry later
    │   │   └── StoreFullError   its disk is full: writes go on once there is room
    │   └── FencedError      a writer whose lease passed to another process was refused
    ├── MissingExtraError        an optional part used without its extra: pip install it
    └── ClosedError              not open: never entered with `async with`, or closed

Lower-layer exceptions are translated into these in exactly one place each
(the client for HTTP, the store for SQLite), always with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "BannedError",
    "CircuitOpenError",
    "ClosedError",
    "FencedError",
    "InvalidRequestError",
    "MarketspineError",
    "MissingExtraError",
    "RateLimitedError",
    "RetryLaterError",
    "StoreError",
    "StoreFullError",
    "StoreUnavailableError",
    "UnknownMarketError",
    "UpstreamError",
]


class MarketspineError(Exception):
    """Base class of every error marketspine raises on purpose."""


class InvalidRequestError(MarketspineError, ValueError):
    """The request is wrong and retrying it unchanged will not help."""


class UnknownMarketError(InvalidRequestError, LookupError):
    """The market code is not listed upstream (never was, or was delisted)."""

    def __init__(self, market: str, message: str | None = None) -> None:
        self.market = market
        super().__init__(
            message or f"unknown market {market!r} (expected a listed code such as KRW-BTC)"
        )


class RetryLaterError(MarketspineError):
    """A transient failure: the same request may succeed after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class RateLimitedError(RetryLaterError):
    """Upstream answered 429 Too Many Requests."""


class BannedError(RetryLaterError):
    """Upstream answered 418: requests from this IP are blocked for ``retry_after`` seconds."""


class UpstreamError(RetryLaterError):
    """Upstream is failing: a 5xx answer, a timeout, or no connection at all."""


class CircuitOpenError(UpstreamError):
    """Calls to this upstream fail fast until the cool-down ends and a probe succeeds."""


class StoreError(MarketspineError):
    """The local candle database cannot be opened, read or written."""


class StoreUnavailableError(StoreError, RetryLaterError):
    """The database cannot be reached for now (connection refused or lost, the server
    restarting) and did not come back within the store's reconnect window. Nothing is wrong
    with the request or the configuration: the same call may succeed later (it is a
    ``RetryLaterError`` too)."""


class StoreFullError(StoreUnavailableError):
    """A write was refused because the disk holding the database is full (SQLite's
    ``SQLITE_FULL``). What was stored is kept and reads go on; the same write succeeds once
    there is room, so it is a ``StoreUnavailableError`` (a ``RetryLaterError``) too."""


class FencedError(StoreError):
    """A recording write was refused because a newer holder of the recorder's lease has
    written since (``record --redis``): this process lost the lease and must stop writing."""


class MissingExtraError(MarketspineError, ImportError):
    """An optional part was used without the extra that installs its dependencies
    (``pip install 'marketspine[EXTRA]'``, which the message names).

    An ImportError too, so code that already guards an optional import keeps working.
    """


class ClosedError(MarketspineError, RuntimeError):
    """The object is not open: it was never entered with ``async with``, or ``aclose()``
    has been called (a closed ``Spine`` or ``Client`` cannot be reopened; make a new one)."""
