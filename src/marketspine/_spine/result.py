"""Candle results: a sequence of candles that knows where it came from.

``CandleResult`` behaves like a read-only list of ``Candle`` (ascending by start) and converts
to pandas or polars. ``meta`` says which layers answered, how many upstream calls were made,
how many pages the request was split into, how long it took and whether it is stale.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from .._base.extras import need
from .._base.time import from_ms
from .._base.timeframes import Timeframe
from .._budget.rules import Priority
from .._store.recording import TradeGap
from ..errors import RetryLaterError
from ..records import Candle

if TYPE_CHECKING:
    import pandas
    import polars

__all__ = [
    "COLUMNS",
    "Answer",
    "CandleResult",
    "ListResult",
    "ResultMeta",
    "Source",
    "Trace",
    "fill_gaps",
]

# memory/database/upstream: the candle layers; live: the WebSocket-fed state; rest: a REST
# answer for tickers, orderbooks or trades; stale: the last live answer served while REST
# was failing.
Source = Literal["memory", "database", "upstream", "live", "rest", "stale"]
COLUMNS = ("time_utc", "open", "high", "low", "close", "volume", "value")


@dataclass(frozen=True, slots=True)
class ResultMeta:
    """Where a result came from. ``sources`` lists every layer that contributed."""

    sources: tuple[Source, ...] = ()
    upstream_calls: int = 0
    pages: int = 0
    elapsed_ms: float = 0.0
    stale: bool = False  # served while the upstream circuit was open
    forming: bool = False  # the last candle is the still-forming one
    # Upstream serves no candle of this timeframe older than this (1s: about three months):
    # set when the request reached before it, so what lies before is unknown, not empty.
    unserved_before_ms: int | None = None
    # Upstream no longer lists the market (Upbit answers 404): served from the store alone.
    delisted: bool = False
    priority: Priority | None = None  # the priority the request was made at
    # A range of trades: the known gaps of the recording inside it that REST could not fill.
    gaps: tuple[TradeGap, ...] = ()
    # Candles of the answer that memory holds only: closes built from the trade stream
    # (equal to upstream's but for float rounding), not stored (see ``Spine._close_live``).
    provisional: int = 0

    @property
    def source(self) -> str:
        """One word: the single layer that answered, or ``mixed``."""
        if not self.sources:
            return "none"
        return self.sources[0] if len(self.sources) == 1 else "mixed"


class Trace:
    """What one request touched, for its ``ResultMeta``."""

    __slots__ = (
        "calls", "delisted", "failure", "gaps", "pages", "provisional", "sources", "stale",
        "unserved_before_ms",
    )  # fmt: skip

    def __init__(self) -> None:
        self.sources: list[Source] = []
        self.calls = 0
        self.pages = 0
        self.stale = False
        self.failure: RetryLaterError | None = None  # the first that made it stale
        self.unserved_before_ms: int | None = None
        self.delisted = False
        self.gaps: tuple[TradeGap, ...] = ()
        self.provisional = 0

    def used(self, source: Source) -> None:
        if source not in self.sources:
            self.sources.append(source)

    def failed(self, error: RetryLaterError) -> None:
        """Upstream could not answer a part: the answer is what is held, stale."""
        self.stale = True
        if self.failure is None:
            self.failure = error

    def check_answered(self, rows: Sized) -> None:
        """Raise the upstream failure that left the answer empty: an empty answer would say
        "no candles there", which nobody knows while upstream cannot be asked."""
        if not rows and self.failure is not None:
            raise self.failure

    def meta(
        self, started: float, *, forming: bool = False, priority: Priority | None = None
    ) -> ResultMeta:
        return ResultMeta(
            sources=tuple(self.sources),
            upstream_calls=self.calls,
            pages=self.pages,
            elapsed_ms=(time.perf_counter() - started) * 1000,
            stale=self.stale,
            forming=forming,
            unserved_before_ms=self.unserved_before_ms,
            delisted=self.delisted,
            priority=priority,
            gaps=self.gaps,
            provisional=self.provisional,
        )


_T = TypeVar("_T")


class ListResult(list[_T]):
    """A plain list of answers (tickers, orderbooks, trades) that also carries ``meta``:
    every list operation works as before."""

    __slots__ = ("meta",)

    def __init__(self, items: Iterable[_T] = (), meta: ResultMeta | None = None) -> None:
        super().__init__(items)
        self.meta = meta or ResultMeta()


class CandleResult(Sequence[Candle]):
    """Candles of one market and timeframe, ascending by start time, with ``meta``."""

    __slots__ = ("_candles", "market", "meta", "timeframe")

    def __init__(
        self,
        market: str,
        timeframe: Timeframe,
        candles: Sequence[Candle],
        meta: ResultMeta | None = None,
    ) -> None:
        self.market = market
        self.timeframe = timeframe
        self._candles = tuple(candles)
        self.meta = meta or ResultMeta()

    @overload
    def __getitem__(self, index: int) -> Candle: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Candle]: ...
    def __getitem__(self, index: int | slice) -> Candle | Sequence[Candle]:
        return self._candles[index]

    def __len__(self) -> int:
        return len(self._candles)

    def __iter__(self) -> Iterator[Candle]:
        return iter(self._candles)

    def __repr__(self) -> str:
        return (
            f"CandleResult({self.market} {self.timeframe.name}, {len(self)} candles, "
            f"source={self.meta.source}, upstream_calls={self.meta.upstream_calls})"
        )

    def columns(self) -> dict[str, list[Any]]:
        """Column name → values, with ``time_utc`` as aware UTC datetimes."""
        return {
            "time_utc": [from_ms(c.start_ms) for c in self._candles],
            "open": [c.open for c in self._candles],
            "high": [c.high for c in self._candles],
            "low": [c.low for c in self._candles],
            "close": [c.close for c in self._candles],
            "volume": [c.volume for c in self._candles],
            "value": [c.value for c in self._candles],
        }

    def to_pandas(self) -> pandas.DataFrame:
        """A DataFrame indexed by ``time_utc`` (UTC). Needs the ``pandas`` extra."""
        need("pandas")
        import pandas as pd

        frame = pd.DataFrame(self.columns())
        frame["time_utc"] = pd.to_datetime(frame["time_utc"], utc=True)
        return frame.set_index("time_utc")

    def to_polars(self) -> polars.DataFrame:
        """A polars DataFrame with a ``time_utc`` column (UTC). Needs the ``polars`` extra."""
        need("polars")
        import polars as pl

        return pl.DataFrame(self.columns()).with_columns(
            pl.col("time_utc").dt.replace_time_zone("UTC")
        )


def fill_gaps(candles: Sequence[Candle], timeframe: Timeframe, end_ms: int) -> list[Candle]:
    """Candles with every empty window before ``end_ms`` filled by a flat candle at the
    previous close with volume 0 (Upbit sends no candle for a window without trades).

    Windows before the first candle stay empty: there is no previous close to carry.
    """
    filled: list[Candle] = []
    for candle in candles:
        if filled:
            _fill_until(filled, timeframe, candle.start_ms)
        filled.append(candle)
    if filled:
        _fill_until(filled, timeframe, end_ms)
    return filled


def _fill_until(filled: list[Candle], timeframe: Timeframe, stop_ms: int) -> None:
    last = filled[-1]
    cursor = timeframe.next_start(last.start_ms)
    while cursor < stop_ms:
        filled.append(
            Candle(
                market=last.market,
                timeframe=last.timeframe,
                start_ms=cursor,
                open=last.close,
                high=last.close,
                low=last.close,
                close=last.close,
                volume=0.0,
                value=0.0,
                last_trade_ms=last.last_trade_ms,
            )
        )
        cursor = timeframe.next_start(cursor)


# Any Spine answer: candles, or a list of tickers, orderbooks or trades.
Answer = TypeVar("Answer", CandleResult, ListResult[Any])
