"""The exchange catalog shared through Redis, in the design documents' keys.

- ``market:info:{exchange}``: JSON ``{"exchange", "url", "fetched_ms", "markets": [...]}``,
  each market as ``Spine.markets()`` gives it (market, korean_name, english_name, warning,
  caution);
- ``precision:cache:{exchange}``: JSON ``{"exchange", "url", "fetched_ms", "instruments":
  [...]}``, each instrument's market, quote_currency, tick_size and supported_levels;
- ``supported:exchanges``: JSON array of the exchange names those keys hold, sorted.

Whichever process holds the warmup lease (``marketspine:warmup:lease``) fetches upstream and
writes the keys, then notes the round (``marketspine:warmup:round``: when it finished, which
exchanges at which URLs, each one's outcome). A process whose catalog is due takes a round
finished recently enough instead of fetching; while another holds the lease it waits for
that round. Without Redis (unreachable) it fetches itself: correct, maybe twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from .._base.time import now_ms
from .._budget.redis_unusable import UNREACHABLE
from .._store.redis_lease import RedisLease
from ..records import Instrument, MarketInfo
from .catalog import Catalog, ExchangeCatalog, WarmupReport

__all__ = ["RedisCatalog"]

log = logging.getLogger("marketspine.warmup")


class _MarketInfo(msgspec.Struct, frozen=True):
    exchange: str
    url: str
    fetched_ms: int
    markets: tuple[MarketInfo, ...]


class _Precision(msgspec.Struct, frozen=True):
    exchange: str
    url: str
    fetched_ms: int
    instruments: tuple[Instrument, ...]


class _Round(msgspec.Struct, frozen=True):
    finished_ms: int
    exchanges: dict[str, str]  # name -> URL that round was asked for
    details: dict[str, dict[str, Any]]


_encode = msgspec.json.Encoder().encode
_markets = msgspec.json.Decoder(_MarketInfo).decode
_precision = msgspec.json.Decoder(_Precision).decode
_round = msgspec.json.Decoder(_Round).decode
_names = msgspec.json.Decoder(list[str]).decode


class RedisCatalog:
    """The catalog in Redis: keys ``{prefix}market:info:{exchange}`` ... (``prefix`` empty
    by default: the design documents' keys as they are), the lease and round under
    ``lease_prefix``. The Redis client stays the caller's to close."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "",
        lease_prefix: str = "marketspine:",
        lease_s: float = 10.0,
        poll_s: float = 0.05,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._round_key = f"{lease_prefix}warmup:round"
        self._lease = RedisLease(redis, f"{lease_prefix}warmup:lease", lease_s=lease_s)
        self._poll_s = poll_s
        self._wall_ms = wall_ms
        self.fetched = 0  # rounds this process fetched upstream under the lease
        self.adopted = 0  # rounds another process fetched for this one
        self.waits = 0  # times this process found the lease held by another

    def market_key(self, exchange: str) -> str:
        return f"{self._prefix}market:info:{exchange}"

    def precision_key(self, exchange: str) -> str:
        return f"{self._prefix}precision:cache:{exchange}"

    @property
    def supported_key(self) -> str:
        return f"{self._prefix}supported:exchanges"

    async def read_into(self, catalog: Catalog, exchanges: Mapping[str, str]) -> None:
        """Take into ``catalog`` each of ``exchanges`` (name -> URL) Redis holds for that
        URL and newer than ``catalog``'s own; an unreachable Redis or a malformed value
        leaves the entry as it was."""
        names = list(exchanges)
        try:
            values = await self._redis.mget(
                [*map(self.market_key, names), *map(self.precision_key, names)]
            )
        except UNREACHABLE as exc:
            log.warning("Redis unreachable for the catalog (%s): keeping the local one", exc)
            return
        for name, info, precision in zip(names, values, values[len(names) :], strict=False):
            if info is None or precision is None:
                continue
            try:
                markets, ticks = _markets(info), _precision(precision)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("malformed catalog of %s in Redis (%s): ignored", name, exc)
                continue
            url = exchanges[name].rstrip("/")
            if markets.url.rstrip("/") != url or ticks.url.rstrip("/") != url:
                continue  # another upstream under the same name: not ours
            held = catalog.exchanges.get(name)
            fetched_ms = min(markets.fetched_ms, ticks.fetched_ms)
            if held is None or held.fetched_ms < fetched_ms:
                catalog.exchanges[name] = ExchangeCatalog(
                    name, markets.url, fetched_ms, markets.markets, ticks.instruments
                )

    async def listed(self, url: str, codes: Sequence[str]) -> list[MarketInfo] | None:
        """The markets Redis lists for the exchange at ``url`` if they include every one of
        ``codes``; None (ask upstream) otherwise or when Redis is unreachable."""
        try:
            known = await self._redis.get(self.supported_key)
            names = _names(known) if known is not None else []
            values = await self._redis.mget(list(map(self.market_key, names))) if names else []
        except (*UNREACHABLE, msgspec.DecodeError, msgspec.ValidationError):
            return None
        for raw in values:
            try:
                info = _markets(raw) if raw is not None else None
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if info is not None and info.url.rstrip("/") == url.rstrip("/"):
                markets = list(info.markets)
                if set(codes) <= {m.market for m in markets}:
                    return markets
        return None

    async def warm(
        self,
        exchanges: Mapping[str, str],
        catalog: Catalog,
        fetch: Callable[[], Awaitable[WarmupReport]],
        *,
        fresh_after_ms: int,
    ) -> WarmupReport:
        """A warmup of ``exchanges`` into ``catalog``: a round of them that finished at or
        after ``fresh_after_ms`` is taken from Redis (no upstream call); else this process
        takes the lease, runs ``fetch`` (which fills ``catalog``) and publishes the result;
        while another holds the lease, it waits for that holder's round."""
        started = time.perf_counter()
        wanted = {name: url.rstrip("/") for name, url in exchanges.items()}
        try:
            while True:
                done = await self._round(wanted, fresh_after_ms)
                if done is None and await self._lease.try_acquire():
                    # Another holder may have published and let go between the look and the
                    # take: look again now that no one else can publish.
                    done = await self._round(wanted, fresh_after_ms)
                    if done is None:
                        break
                    await self._lease.release()
                if done is not None:
                    await self.read_into(catalog, exchanges)
                    self.adopted += 1
                    return _adopted(done, catalog, wanted, time.perf_counter() - started)
                self.waits += 1
                await asyncio.sleep(self._poll_s)  # the holder publishes within one warmup
        except UNREACHABLE as exc:
            log.warning("Redis unreachable for the warmup lease (%s): warming up here", exc)
            return await fetch()
        return await self._lease.holding(lambda: self._fetch_and_publish(wanted, catalog, fetch))

    async def _fetch_and_publish(
        self, wanted: dict[str, str], catalog: Catalog, fetch: Callable[[], Awaitable[WarmupReport]]
    ) -> WarmupReport:
        report = await fetch()
        self.fetched += 1
        try:
            await self._publish(wanted, catalog, report)
        except UNREACHABLE as exc:
            log.warning("Redis unreachable: the warmup is not shared this time (%s)", exc)
        return report

    async def _round(self, wanted: dict[str, str], fresh_after_ms: int) -> _Round | None:
        """The last round, when it finished at or after ``fresh_after_ms`` and covered every
        exchange of ``wanted`` at the same URL."""
        raw = await self._redis.get(self._round_key)
        if raw is None:
            return None
        try:
            done = _round(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if done.finished_ms < fresh_after_ms:
            return None
        if any(done.exchanges.get(name) != url for name, url in wanted.items()):
            return None
        return done

    async def _publish(
        self, wanted: dict[str, str], catalog: Catalog, report: WarmupReport
    ) -> None:
        """Write the refreshed exchanges' keys, the list of names, then the round."""
        known = await self._redis.get(self.supported_key)
        try:
            names = set(_names(known)) if known is not None else set()
        except (msgspec.DecodeError, msgspec.ValidationError):
            names = set()
        async with self._redis.pipeline(transaction=True) as pipe:
            for name in report.refreshed_exchanges:
                entry = catalog.exchanges[name]
                pipe.set(
                    self.market_key(name),
                    _encode(_MarketInfo(name, entry.url, entry.fetched_ms, entry.markets)),
                )
                pipe.set(
                    self.precision_key(name),
                    _encode(_Precision(name, entry.url, entry.fetched_ms, entry.instruments)),
                )
                names.add(name)
            pipe.set(self.supported_key, _encode(sorted(names)))
            pipe.set(
                self._round_key,
                _encode(_Round(self._wall_ms(), wanted, report.exchange_details)),
            )
            await pipe.execute()


def _adopted(
    done: _Round, catalog: Catalog, wanted: dict[str, str], elapsed: float
) -> WarmupReport:
    """The report of a round another process fetched, as this process now holds it."""
    details: dict[str, dict[str, Any]] = {}
    refreshed: list[str] = []
    for name in wanted:
        entry = catalog.exchanges.get(name)
        detail = dict(done.details.get(name, {"success": False, "error": "not in Redis"}))
        if detail.get("success") and entry is None:
            detail = {"success": False, "url": wanted[name], "error": "not in Redis"}
        detail["source"] = "redis"
        details[name] = detail
        if detail.get("success"):
            refreshed.append(name)
    # An upstream configured under two names lists its markets once.
    entries = [catalog.exchanges[name] for name in refreshed]
    per_url = {entry.url.rstrip("/"): len(entry.markets) for entry in entries}
    return WarmupReport(
        success=len(refreshed) == len(wanted),
        refreshed_exchanges=refreshed,
        total_markets=sum(per_url.values()),
        execution_time=elapsed,
        exchange_details=details,
    )
