"""Records back into Upbit's REST JSON (pure): the fields, in Upbit's order, that a client of
``api.upbit.com`` expects. The one writer of these rows: ``serve`` answers its ``/v1/…``
paths with them, and so does the simulator. Candle rows are built from field values
(``candle_row``), not records: the simulator writes pages of 200 from its own bars, and a
record per bar would cost it a tenth of its speed for nothing.

Closed candles never change, so their encoded rows are kept (``CandleRows``): a cached
page of 200 is then a join of 200 byte strings, not 200 encodings.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import msgspec

from .._base.memory import MemoryBudget
from .._base.time import DAY_MS, KST_OFFSET_MS, format_utc
from .._base.timeframes import Timeframe
from ..records import Candle, Instrument, MarketInfo, Orderbook, Ticker, Trade
from .ticks import tick_decimals

__all__ = [
    "CAUTION_KEYS",
    "CandleRows",
    "ClosedAnswers",
    "candle_row",
    "decimal_text",
    "instrument_row",
    "market_row",
    "number",
    "orderbook_row",
    "stamp",
    "supported_levels_row",
    "ticker_row",
    "trade_row",
]

CAUTION_KEYS = (
    "PRICE_FLUCTUATIONS",
    "TRADING_VOLUME_SOARING",
    "DEPOSIT_AMOUNT_SOARING",
    "GLOBAL_PRICE_DIFFERENCES",
    "CONCENTRATION_OF_SMALL_ACCOUNTS",
)

_encode = msgspec.json.Encoder().encode


@functools.lru_cache(maxsize=4096)
def _date_text(day: int) -> str:
    return format_utc(day * DAY_MS)[:10]


_HOUR_MINUTE = tuple(f"T{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
_SECOND = tuple(f"{s:02d}" for s in range(60))


def stamp(ms: int) -> str:
    """``yyyy-MM-ddTHH:mm:ss`` (naive UTC) from lookup tables: a page of 200 candles needs
    400 of these and strftime would be most of its cost."""
    day, rest = divmod(ms, DAY_MS)
    minute, second = divmod(rest // 1000, 60)
    return _date_text(day) + _HOUR_MINUTE[minute] + _SECOND[second]


def number(value: float) -> int | float:
    """A whole number as a JSON integer (levels, zero slots), otherwise the float."""
    return int(value) if float(value).is_integer() else value


def decimal_text(value: float) -> str:
    """A tick or level the way Upbit spells it in strings: ``"1000"``, ``"0.00000001"``."""
    value = float(value)
    if value >= 1 or value == 0:
        return str(int(value)) if value.is_integer() else repr(value)
    return f"{value:.{tick_decimals(value)}f}"


class ClosedAnswers:
    """Whole answers made only of closed candles, by request (bounded, least recently used
    out first): asked again, they are sent as they are. ``max_bytes`` bounds the answers
    and their keys together: each entry is charged its body and ``ENTRY_BYTES`` for its key
    (a small tuple of normalised parameters) and the dictionary's slot. With ``budget``
    (the Spine's memory budget) each entry is charged there too, so the process's one
    budget counts them and may evict them for other holders' data, least recently used
    first across all of them."""

    ENTRY_BYTES = 320  # a 4-tuple of a short str, a market code and two ints, and its slot
    _HOLDER = "closed_answers"
    # Request spellings remembered for the fast path (``spelled``): a bounded count of short
    # ones, so junk parameters can neither grow it nor make it miss for others.
    SPELLINGS = 4096
    MAX_SPELLING = 256

    def __init__(self, max_bytes: int = 32 << 20, *, budget: MemoryBudget | None = None) -> None:
        self._answers: OrderedDict[Hashable, bytes] = OrderedDict()
        self._max_bytes = max_bytes
        self._budget = budget
        if budget is not None:
            budget.register(self._HOLDER, self._evicted)
        self.bytes = 0
        self._spellings: OrderedDict[tuple[str, bytes], Hashable] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def remember(self, path: str, query: bytes, key: Hashable) -> None:
        """Note that ``path?query`` asks for the answer kept under ``key``."""
        if len(path) + len(query) > self.MAX_SPELLING:
            return
        self._spellings[(path, query)] = key
        self._spellings.move_to_end((path, query))
        if len(self._spellings) > self.SPELLINGS:
            self._spellings.popitem(last=False)

    def spelled(self, path: str, query: bytes) -> bytes | None:
        """The answer kept for a request spelled exactly as one ``remember``-ed, if any: no
        parsing, for the fast path of a client polling the same request."""
        key = self._spellings.get((path, query))
        return None if key is None else self.get(key)

    def get(self, key: Hashable) -> bytes | None:
        body = self._answers.get(key)
        if body is not None:
            self._answers.move_to_end(key)
            if self._budget is not None:
                self._budget.touch(self._HOLDER, key)
        return body

    def put(self, key: Hashable, body: bytes) -> None:
        if len(body) > self._max_bytes // 4:
            return  # one huge answer must not flush all the others
        old = self._answers.pop(key, None)
        if old is not None:
            self.bytes -= len(old) + self.ENTRY_BYTES
        self.bytes += len(body) + self.ENTRY_BYTES
        self._answers[key] = body
        if self._budget is not None:  # may evict older entries here (``_evicted``)
            self._budget.charge(self._HOLDER, key, len(body) + self.ENTRY_BYTES)
        while self.bytes > self._max_bytes:
            dropped_key, dropped = self._answers.popitem(last=False)
            self.bytes -= len(dropped) + self.ENTRY_BYTES
            if self._budget is not None:
                self._budget.release(self._HOLDER, dropped_key)

    def _evicted(self, key: Hashable) -> None:
        """The budget dropped this entry (it already forgot its size)."""
        body = self._answers.pop(key, None)
        if body is not None:
            self.bytes -= len(body) + self.ENTRY_BYTES


class CandleRows:
    """Encoded candle rows, newest first, for ``/v1/candles/…``. A row of a closed candle is
    encoded once and kept (bounded); the forming one is encoded every time."""

    def __init__(self, max_rows: int = 100_000) -> None:  # about 35 MB of rows at most
        # Keyed by the sums too: a close built from the trade stream (held in memory until
        # upstream's own replaces it) may differ from upstream's in their last digits.
        self._rows: dict[tuple[str, str, int, int, float, float, float], bytes] = {}
        self._max_rows = max_rows

    def page(
        self,
        candles: Sequence[Candle],
        tf: Timeframe,
        *,
        previous: Candle | None,
        forming_start_ms: int | None,
        krw_rate: float | None = None,
    ) -> bytes:
        """The JSON array of ``candles`` (ascending in, newest first out). ``previous`` is
        the candle before the first (day candles compare with its close); a candle starting
        at ``forming_start_ms`` is still forming. ``krw_rate`` adds ``converted_trade_price``
        (days with ``converting_price_unit=KRW``)."""
        rows: list[bytes] = []
        prev_close = previous.close if previous is not None else None
        for candle in candles:
            prev = candle.open if prev_close is None else prev_close
            prev_close = candle.close
            if krw_rate is not None:
                rows.append(_encode(_candle(candle, tf, prev, krw_rate)))
                continue
            key = (
                candle.market, tf.key, candle.start_ms, candle.last_trade_ms, prev,
                candle.volume, candle.value,
            )  # fmt: skip
            row = self._rows.get(key)
            if row is None:
                row = _encode(_candle(candle, tf, prev, None))
                if candle.start_ms != forming_start_ms:
                    if len(self._rows) >= self._max_rows:
                        self._rows.clear()  # rebuilt from the hot pages within a request
                    self._rows[key] = row
            rows.append(row)
        rows.reverse()
        return b"[" + b",".join(rows) + b"]"


def _candle(candle: Candle, tf: Timeframe, prev: float, krw_rate: float | None) -> dict[str, Any]:
    converted = None if krw_rate is None else round(candle.close * krw_rate, 8)
    return candle_row(
        candle.market,
        tf,
        candle.start_ms,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.last_trade_ms,
        candle.value,
        candle.volume,
        prev,
        converted,
    )


def candle_row(
    market: str,
    tf: Timeframe,
    start_ms: int,
    open_: float,
    high: float,
    low: float,
    close: float,
    last_trade_ms: int,
    value: float,
    volume: float,
    prev_close: float | None = None,
    converted: float | None = None,
) -> dict[str, Any]:
    """One ``/v1/candles/…`` row. Day rows compare with ``prev_close`` (the close of the day
    before; None on the listing day, which compares with its own open) and carry
    ``converted`` as ``converted_trade_price`` when given (``converting_price_unit=KRW``)."""
    utc = stamp(start_ms)
    row: dict[str, Any] = {
        "market": market,
        "candle_date_time_utc": utc,
        "candle_date_time_kst": stamp(start_ms + KST_OFFSET_MS),
        "opening_price": open_,
        "high_price": high,
        "low_price": low,
        "trade_price": close,
        "timestamp": last_trade_ms,
        "candle_acc_trade_price": value,
        "candle_acc_trade_volume": volume,
    }
    unit = tf.unit
    if unit == "minute":
        row["unit"] = tf.minutes
    elif unit == "day":
        prev = open_ if prev_close is None else prev_close
        change = round(close - prev, 8)
        row["prev_closing_price"] = prev
        row["change_price"] = change
        row["change_rate"] = round(change / prev, 10) if prev else 0.0
        if converted is not None:
            row["converted_trade_price"] = converted
    elif unit != "second":
        row["first_day_of_period"] = utc[:10]
    return row


def market_row(info: MarketInfo, *, details: bool, korea: bool = True) -> dict[str, Any]:
    """A ``/v1/market/all`` row; with ``details`` the warnings: ``market_event`` on Upbit
    Korea, the older ``market_warning`` on the other regional sites (``korea`` False)."""
    row: dict[str, Any] = {"market": info.market}
    if info.korean_name is not None:
        row["korean_name"] = info.korean_name
    row["english_name"] = info.english_name
    if details and korea:
        row["market_event"] = {
            "warning": info.warning,
            "caution": {key: bool(info.caution.get(key, False)) for key in CAUTION_KEYS},
        }
    elif details:
        row["market_warning"] = "CAUTION" if info.warning else "NONE"
    return row


def ticker_row(t: Ticker) -> dict[str, Any]:
    utc = stamp(t.trade_ms)
    kst = stamp(t.trade_ms + KST_OFFSET_MS)
    return {
        "market": t.market,
        "trade_date": utc[0:4] + utc[5:7] + utc[8:10],
        "trade_time": utc[11:13] + utc[14:16] + utc[17:19],
        "trade_date_kst": kst[0:4] + kst[5:7] + kst[8:10],
        "trade_time_kst": kst[11:13] + kst[14:16] + kst[17:19],
        "trade_timestamp": t.trade_ms,
        "opening_price": t.open,
        "high_price": t.high,
        "low_price": t.low,
        "trade_price": t.price,
        "prev_closing_price": t.prev_close,
        "change": t.change,
        "change_price": abs(t.change_price),
        "change_rate": abs(t.change_rate),
        "signed_change_price": t.change_price,
        "signed_change_rate": t.change_rate,
        "trade_volume": t.trade_volume,
        "acc_trade_price": t.acc_value,
        "acc_trade_price_24h": t.acc_value_24h,
        "acc_trade_volume": t.acc_volume,
        "acc_trade_volume_24h": t.acc_volume_24h,
        "highest_52_week_price": t.high_52w,
        "highest_52_week_date": t.high_52w_date,
        "lowest_52_week_price": t.low_52w,
        "lowest_52_week_date": t.low_52w_date,
        "timestamp": t.ms,
    }


def orderbook_row(book: Orderbook, depth: int, *, with_level: bool = True) -> dict[str, Any]:
    """A book cut to ``depth`` levels (totals over those levels), thin sides padded with
    zero slots, REST key order ``bid_price, bid_size, ask_price, ask_size``. Prices and
    sizes go out as they are, an empty slot's zeros as JSON integers (as Upbit writes them).
    ``level`` only on Upbit Korea (``with_level``)."""
    units = list(book.units[:depth])
    rows = [
        {
            "bid_price": u.bid_price or 0,
            "bid_size": u.bid_size or 0,
            "ask_price": u.ask_price or 0,
            "ask_size": u.ask_size or 0,
        }
        for u in units
    ]
    rows += [{"bid_price": 0, "bid_size": 0, "ask_price": 0, "ask_size": 0}] * (depth - len(rows))
    cut = len(units) < len(book.units)
    row: dict[str, Any] = {
        "market": book.market,
        "timestamp": book.ms,
        "total_ask_size": round(sum(u.ask_size for u in units), 8) if cut else book.total_ask_size,
        "total_bid_size": round(sum(u.bid_size for u in units), 8) if cut else book.total_bid_size,
        "orderbook_units": rows,
    }
    if with_level:
        row["level"] = number(book.level)
    return row


def trade_row(t: Trade) -> dict[str, Any]:
    utc = stamp(t.ms)
    return {
        "market": t.market,
        "trade_date_utc": utc[:10],
        "trade_time_utc": utc[11:],
        "timestamp": t.ms,
        "trade_price": t.price,
        "trade_volume": t.volume,
        "prev_closing_price": t.prev_close,
        "change_price": t.change_price,
        "ask_bid": t.side,
        "sequential_id": t.seq,
    }


def instrument_row(i: Instrument) -> dict[str, Any]:
    return {
        "market": i.market,
        "quote_currency": i.quote_currency,
        "tick_size": decimal_text(i.tick_size),
        "supported_levels": [decimal_text(x) for x in i.supported_levels],
    }


def supported_levels_row(market: str, levels: Sequence[float]) -> dict[str, Any]:
    """A ``/v1/orderbook/supported_levels`` row (deprecated by Upbit): levels as numbers."""
    return {"market": market, "supported_levels": [number(x) for x in levels]}
