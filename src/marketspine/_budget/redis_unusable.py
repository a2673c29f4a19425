"""The Redis failures that mean "Redis cannot be used now" to everything that shares through
it (the rate budget, the leases, the catalog, the live feed): it fails over to working alone
(a share of the budget, a fetch here), says so once, and tries Redis again later.

Besides a Redis that cannot be reached, one that refuses writes is as unusable: full
(``maxmemory`` reached with no eviction) or a read-only replica (a failover under way).
Neither is fixed by the request; both pass without a restart of ours."""

from __future__ import annotations

from redis import exceptions as redis_errors

__all__ = ["UNREACHABLE"]

UNREACHABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    OSError,
)
