"""The exchange warmup: market lists and instruments of every configured upstream.

Upbit's regional sites (kr, sg, id, th) serve the same API at different hosts. Each
configured exchange is fetched once per refresh even when several names point at the same
URL; one failing exchange never stops the others. The result is kept in a JSON file beside
the candle database (written atomically: a temporary file, then a rename) so it survives
restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..records import Instrument, MarketInfo

log = logging.getLogger("marketspine.warmup")

__all__ = [
    "REGION_URLS",
    "Catalog",
    "ExchangeCatalog",
    "WarmupReport",
    "catalog_path",
    "warm_up",
]

REGION_URLS = {
    "upbit-kr": "https://api.upbit.com",
    "upbit-sg": "https://sg-api.upbit.com",
    "upbit-id": "https://id-api.upbit.com",
    "upbit-th": "https://th-api.upbit.com",
}


class ExchangeCatalog(msgspec.Struct, frozen=True):
    """What one exchange lists: markets with their flags and instruments with tick sizes."""

    name: str
    url: str
    fetched_ms: int
    markets: tuple[MarketInfo, ...]
    instruments: tuple[Instrument, ...]


class Catalog(msgspec.Struct):
    """Every exchange's latest successful fetch, by exchange name."""

    exchanges: dict[str, ExchangeCatalog] = {}

    @classmethod
    def load(cls, path: Path) -> Catalog:
        """The catalog saved at ``path``, or an empty one if there is none or it is unreadable
        (it is a cache: the next warmup rewrites it)."""
        try:
            return msgspec.json.decode(path.read_bytes(), type=cls)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return cls()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(msgspec.json.encode(self))
        os.replace(temporary, path)

    def tick_size(self, market: str, url: str | None = None) -> float | None:
        """The warmed tick size of ``market`` (from the exchange at ``url`` first), or None
        when no warmup listed it."""
        ordered = sorted(self.exchanges.values(), key=lambda e: e.url.rstrip("/") != url)
        for exchange in ordered:
            for instrument in exchange.instruments:
                if instrument.market == market:
                    return instrument.tick_size
        return None


@dataclass(frozen=True, slots=True)
class WarmupReport:
    """The warmup answer, in the design documents' shape (see ``as_dict``)."""

    success: bool
    refreshed_exchanges: list[str]
    total_markets: int
    execution_time: float
    exchange_details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "refreshed_exchanges": self.refreshed_exchanges,
            "total_markets": self.total_markets,
            "execution_time": round(self.execution_time, 3),
            "exchange_details": self.exchange_details,
        }


Fetch = Callable[[str], Awaitable[tuple[list[MarketInfo], list[Instrument]]]]


async def warm_up(
    exchanges: Mapping[str, str],
    fetch: Fetch,
    catalog: Catalog,
    *,
    wall_ms: Callable[[], int],
) -> WarmupReport:
    """Fetch ``exchanges`` (name → base URL) with ``fetch(url)``, each distinct URL once and
    all concurrently; record successes in ``catalog``. A failed exchange keeps its previous
    catalog entry and reports its error text; it never stops the others."""
    started = time.perf_counter()
    urls = sorted({url.rstrip("/") for url in exchanges.values()})

    took_ms: dict[str, int] = {}  # each URL's own fetch time (they run side by side)
    log.info("refresh: warming up %d exchange(s)", len(exchanges))

    async def attempt(url: str) -> tuple[list[MarketInfo], list[Instrument]] | BaseException:
        began = time.perf_counter()
        try:
            return await fetch(url)
        except Exception as exc:  # reported per exchange, never raised past the others
            return exc
        finally:
            took_ms[url] = round((time.perf_counter() - began) * 1000)

    outcomes = dict(zip(urls, await asyncio.gather(*(attempt(u) for u in urls)), strict=True))
    details: dict[str, dict[str, Any]] = {}
    refreshed: list[str] = []
    for name, url in exchanges.items():
        outcome = outcomes[url.rstrip("/")]
        if isinstance(outcome, BaseException):
            error = f"{type(outcome).__name__}: {outcome}"
            cause = outcome.__cause__ or outcome.__context__
            if cause is not None and str(cause) not in str(outcome):  # said already: once
                error += f" (caused by {type(cause).__name__}: {cause})"
            details[name] = {
                "success": False,
                "url": url,
                "error": error,
                "duration_ms": took_ms[url.rstrip("/")],
            }
            log.error(
                "warmup of %s (%s) failed: %s", name, url, error,
                extra={"event": "warmup_failed", "key": name},
            )  # fmt: skip
            continue
        markets, instruments = outcome
        catalog.exchanges[name] = ExchangeCatalog(
            name, url, wall_ms(), tuple(markets), tuple(instruments)
        )
        refreshed.append(name)
        log.info(
            "refresh: %s ok, %d markets in %.2f s",
            name, len(markets), took_ms[url.rstrip("/")] / 1000,
        )  # fmt: skip
        details[name] = {
            "success": True,
            "url": url,
            "markets": len(markets),
            "instruments": len(instruments),
            "duration_ms": took_ms[url.rstrip("/")],
        }
    report = WarmupReport(
        success=len(refreshed) == len(exchanges),
        refreshed_exchanges=refreshed,
        # An upstream configured under two names lists its markets once.
        total_markets=sum(
            len(found[0]) for found in outcomes.values() if not isinstance(found, BaseException)
        ),
        execution_time=time.perf_counter() - started,
        exchange_details=details,
    )
    log.log(
        logging.INFO if report.success else logging.WARNING,
        "refresh: success %d/%d, %d markets in %.2f s",
        len(refreshed), len(exchanges), report.total_markets, report.execution_time,
    )  # fmt: skip
    return report


def catalog_path(db_path: Path) -> Path:
    """Where the catalog of a database lives: beside it."""
    return db_path.with_name(db_path.name + ".catalog.json")
