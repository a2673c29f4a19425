"""The market list a Spine answers from, and the catalog of every configured exchange.

``markets()`` is fetched once and cached; ``warmup()`` fetches the market list and
instruments of every exchange (each distinct URL once), keeps them on disk across restarts,
and the main upstream's entry then answers ``markets()`` too. With a shared catalog (Redis),
a warmup another process made recently enough is taken instead of fetching, and one
process at a time fetches for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .._base.time import now_ms
from .._budget.rules import Priority, RateBudget
from .._client.client import Client
from .._client.connections import Transports
from .._store.sqlite import CandleStore
from .._upbit.ticks import tick_size as table_tick_size
from .._upbit.ticks import warmed_tick_size
from ..errors import InvalidRequestError, RetryLaterError
from ..records import Instrument, MarketInfo
from .catalog import Catalog, WarmupReport, catalog_path, warm_up
from .result import ListResult, Trace

if TYPE_CHECKING:  # redis loads only when a Redis is used
    from .catalog_redis import RedisCatalog

__all__ = ["MarketList"]

logger = logging.getLogger("marketspine")


class MarketList:
    """Markets of ``upstream`` and the catalog of ``exchanges`` (name -> REST URL).
    ``budget`` paces clients made for the other exchanges (through ``transport`` in tests);
    ``on_call`` counts each upstream call ``markets()`` makes. ``refresh`` warms up every
    ``every_s`` on ``sleep``'s clock; ``warm_at_start`` (exchanges were configured) says
    the Spine starts it at once. ``shared``: the catalog other processes share."""

    def __init__(
        self,
        upstream: str,
        exchanges: Mapping[str, str] | None,
        *,
        budget: RateBudget | None,
        on_call: Callable[[], None],
        transport: Transports = None,
        every_s: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        shared: RedisCatalog | None = None,
    ) -> None:
        self._upstream = upstream
        self._exchanges = dict(exchanges) if exchanges else {"upbit": upstream}
        self._budget = budget
        self._on_call = on_call
        self._transport = transport
        self._every_s = every_s
        self._sleep = sleep
        self._shared = shared
        # Configured exchanges are warmed up at start-up too, when a schedule is wanted.
        self.warm_at_start = bool(exchanges) and every_s > 0
        self.other_calls = 0  # requests sent by the clients made for other exchanges
        self.last_report: WarmupReport | None = None
        self._failing: set[str] = set()  # exchanges whose last warmup failed (to tell recovery)
        self._catalog = Catalog()
        self._path: Path | None = None
        self._markets: dict[str, MarketInfo] | None = None
        # Last prices seen at the latest warmup of the main upstream: they place each warmed
        # instrument's tick in its price band (not kept across restarts).
        self._warm_prices: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def load(self, db_path: Path) -> None:
        """Take the catalog kept beside the database at ``db_path``."""
        self._path = catalog_path(db_path)
        self._catalog = await asyncio.to_thread(Catalog.load, self._path)
        self._adopt()

    async def load_shared(self) -> None:
        """Take what the shared catalog holds that is newer than ours (without one: nothing)."""
        if self._shared is not None:
            await self._shared.read_into(self._catalog, self._exchanges)
            self._adopt()

    async def markets(
        self, client: Client, *, refresh: bool, held: CandleStore | None = None
    ) -> ListResult[MarketInfo]:
        """Every listed market (fetched once through ``client``, or again on ``refresh``);
        with ``held``, also every market that store holds candles of and upstream no longer
        lists (``delisted=True``). ``meta`` says rest (fetched now) or memory, and database
        for the delisted ones."""
        started, trace = time.perf_counter(), Trace()
        async with self._lock:
            if self._markets is None and not refresh:
                await self.load_shared()  # another process may have warmed up since
            if self._markets is None or refresh:
                rows = await client.markets(details=True)
                self._markets = {m.market: m for m in rows}
                self._on_call()
                trace.calls += 1
                trace.used("rest")
            else:
                trace.used("memory")
            listed = dict(self._markets)
        if held is None:
            return ListResult(listed.values(), trace.meta(started))
        gone = sorted({s.market for s in await held.summary()} - listed.keys())
        trace.used("database")
        delisted = (MarketInfo(m, None, m, False, {}, True) for m in gone)
        return ListResult([*listed.values(), *delisted], trace.meta(started))

    async def warmup(self, client: Client, *, max_age_s: float | None = None) -> WarmupReport:
        """Fetch every exchange's markets and instruments (the main one through ``client``)
        and keep them; a failing exchange reports its error and never stops the others.
        With a shared catalog, a warmup of them another process finished within
        ``max_age_s`` (default ``every_s``) is taken instead, without calling upstream."""
        if self._shared is None:
            return await self._warm_here(client)
        age_s = self._every_s if max_age_s is None else max_age_s
        report = await self._shared.warm(
            self._exchanges,
            self._catalog,
            lambda: self._warm_here(client),
            fresh_after_ms=now_ms() - round(max(age_s, 0.0) * 1000),
        )
        self.last_report = report
        self._adopt()
        await self._save()
        return report

    async def _warm_here(self, client: Client) -> WarmupReport:

        async def fetch(url: str) -> tuple[list[MarketInfo], list[Instrument]]:
            if url.rstrip("/") == self._upstream:
                found = await _markets_and_instruments(client)
                self._warm_prices = await _last_prices(client, found[0])
                return found
            async with Client(url, budget=self._budget, transport=self._transport) as other:
                try:
                    return await _markets_and_instruments(other)
                finally:
                    self.other_calls += sum(other.statistics().sent.values())

        report = await warm_up(self._exchanges, fetch, self._catalog, wall_ms=now_ms)
        self.last_report = report
        self._adopt()
        await self._save()
        return report

    async def _save(self) -> None:
        if self._path is not None:
            await asyncio.to_thread(self._catalog.save, self._path)

    async def refresh(self, client: Client, *, first_now: bool = False) -> None:
        """Warm up (at once with ``first_now``, then) every ``every_s`` until cancelled; a
        failed round is logged and the next one tries again."""
        failed = False  # the last round raised (so the next success is a recovery)
        while True:
            if first_now:
                first_now = False
            else:
                await self._sleep(self._every_s)
            try:
                await self.warmup(client)
            except Exception:  # the next round tries again; details are in the report
                failed = True
                logger.exception(
                    "scheduled warmup failed", extra={"event": "warmup_failed", "key": "scheduled"}
                )
            else:
                if failed:
                    failed = False
                    logger.info(
                        "scheduled warmup recovered",
                        extra={"event": "warmup_recovered", "key": "scheduled"},
                    )

    def tick_size(self, market: str, price: float) -> float:
        """The tick of ``market`` at ``price``: the instrument the last warmup fetched (the
        main upstream's first) in the price band it was fetched in, the table elsewhere
        (see ``warmed_tick_size``); Upbit's table alone for a market never warmed."""
        quote = market.partition("-")[0]
        warmed = self._catalog.tick_size(market, self._upstream)
        if warmed is not None:
            return warmed_tick_size(quote, warmed, price, self._warm_prices.get(market))
        return table_tick_size(quote, price)

    def _adopt(self) -> None:
        """Answer ``markets()`` from the catalog of the main upstream, if there is one."""
        if self.last_report is not None:
            self._failing = _log_recoveries(self._failing, self.last_report)
        for entry in self._catalog.exchanges.values():
            if entry.url.rstrip("/") == self._upstream:
                if self._markets is not None:
                    _log_listing_changes(self._markets, entry.markets)
                self._markets = {m.market: m for m in entry.markets}


def _log_recoveries(failing: set[str], report: WarmupReport) -> set[str]:
    """Log each exchange that failed last time and warmed up now; the ones failing now."""
    for name in sorted(failing & set(report.refreshed_exchanges)):
        logger.info(
            "warmup of %s recovered", name, extra={"event": "warmup_recovered", "key": name}
        )
    return set(report.exchange_details) - set(report.refreshed_exchanges)


def _log_listing_changes(before: dict[str, MarketInfo], after: Iterable[MarketInfo]) -> None:
    """Log markets upstream stopped listing, and changed warning/caution flags."""
    now = {m.market: m for m in after}
    for code in sorted(before.keys() - now.keys()):
        logger.warning(
            "market %s delisted: upstream no longer lists it",
            code,
            extra={"event": "market_delisted", "key": code},
        )
    for code in sorted(before.keys() & now.keys()):
        old, new = before[code], now[code]
        if (old.warning, old.caution) != (new.warning, new.caution):
            raised = sorted(k for k, v in new.caution.items() if v)
            logger.warning(
                "market %s flags changed: warning %s -> %s, caution %s",
                code, old.warning, new.warning, ", ".join(raised) or "none",
                extra={"event": "market_flags", "key": code, "warning": new.warning},
            )  # fmt: skip


async def _markets_and_instruments(client: Client) -> tuple[list[MarketInfo], list[Instrument]]:
    markets = await client.markets(details=True, priority=Priority.HIGH)
    instruments = await client.instruments([m.market for m in markets], priority=Priority.HIGH)
    return markets, instruments


async def _last_prices(client: Client, markets: list[MarketInfo]) -> dict[str, float]:
    """Each market's last price (one ``ticker/all`` call for every quote currency), or none
    when that call fails: ticks are then placed by the table alone."""
    quotes = sorted({m.market.partition("-")[0] for m in markets})
    try:
        tickers = await client.tickers_by_quote(quotes, priority=Priority.HIGH)
    except (RetryLaterError, InvalidRequestError) as exc:
        logger.warning("warmup: last prices unavailable (%s); ticks placed by the table", exc)
        return {}
    return {t.market: t.price for t in tickers}
