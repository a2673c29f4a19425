"""Rows of the recording tables (``_store.recording``) and the records they hold, both ways:
pure functions both stores share, so SQLite and PostgreSQL write and read the very same
columns. A trades row keeps the side as one integer (1 = BID); a book's levels are one blob
(``pack_units``); SQLite keeps a trade's sizes as integer counts of 1e-8 units where that is
exact (``pack_size``, ``packed_trade_row``), PostgreSQL as they are.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from ..records import Orderbook, OrderbookUnit, Side, Ticker, Trade
from .recording import TradeGap

__all__ = [
    "GAP_COLUMNS",
    "ORDERBOOK_COLUMNS",
    "SIZE_SCALE",
    "TICKER_COLUMNS",
    "TRADE_COLUMNS",
    "gap_of_row",
    "gap_row",
    "marks",
    "orderbook_of_row",
    "orderbook_row",
    "pack_size",
    "pack_units",
    "packed_trade_row",
    "span_of_row",
    "ticker_of_row",
    "ticker_row",
    "trade_of_packed_row",
    "trade_of_row",
    "trade_row",
    "unpack_size",
    "unpack_units",
]

TRADE_COLUMNS = (
    "market, seq, ms, price, volume, taker_bid, prev_close, change_price, "
    "best_ask_price, best_ask_size, best_bid_price, best_bid_size"
)
GAP_COLUMNS = "market, from_seq, to_seq, from_ms, to_ms, reason, found_ms"
ORDERBOOK_COLUMNS = "market, ms, level, total_ask_size, total_bid_size, units"
TICKER_COLUMNS = (
    "market, ms, trade_ms, price, open, high, low, prev_close, change, change_price, "
    "change_rate, trade_volume, acc_volume, acc_value, acc_volume_24h, acc_value_24h, "
    "high_52w, high_52w_date, low_52w, low_52w_date, side, acc_ask_volume, acc_bid_volume, "
    "market_state, delisting_date"
)


def marks(columns: str, mark: str) -> str:
    """The parameter list of an INSERT of ``columns``: ``mark`` (``?``, ``%s``) once each."""
    return ", ".join([mark] * len(columns.split(",")))


def trade_row(trade: Trade) -> tuple[Any, ...]:
    """``trade`` as the columns of a trades row (``TRADE_COLUMNS``; the side as 1 = BID)."""
    return (
        trade.market,
        trade.seq,
        trade.ms,
        trade.price,
        trade.volume,
        trade.side == "BID",
        trade.prev_close,
        trade.change_price,
        trade.best_ask_price,
        trade.best_ask_size,
        trade.best_bid_price,
        trade.best_bid_size,
    )


def trade_of_row(row: Sequence[Any]) -> Trade:
    """A trades row (``TRADE_COLUMNS``) back as the ``Trade`` it was written from."""
    (market, seq, ms, price, volume, taker_bid, prev_close, change_price, *best) = row
    side: Side = "BID" if taker_bid else "ASK"
    ask_price, ask_size, bid_price, bid_size = (None if v is None else float(v) for v in best)
    return Trade(
        market,
        int(ms),
        float(price),
        float(volume),
        side,
        int(seq),
        float(prev_close),
        float(change_price),
        ask_price,
        ask_size,
        bid_price,
        bid_size,
    )


SIZE_SCALE = 1e8  # Upbit's sizes have at most 8 decimals


def pack_size(size: float | None) -> float | int | None:
    """A size as SQLite keeps it: the integer count of 1e-8 units when that gives the same
    float back exactly, else the float itself (a column without type keeps the two apart)."""
    if size is None:
        return None
    # Division by a power of ten is correctly rounded, so ``units / 1e8`` is the float
    # nearest the decimal: the very float a decimal of at most 8 places was parsed into.
    units = round(size * SIZE_SCALE)
    return units if abs(units) < 1 << 53 and units / SIZE_SCALE == size else size


def unpack_size(stored: object) -> float | None:
    """``pack_size`` undone."""
    if stored is None:
        return None
    if isinstance(stored, int):
        return stored / SIZE_SCALE
    return float(stored)  # type: ignore[arg-type]


def pack_units(units: Sequence[OrderbookUnit]) -> bytes:
    """A book's levels as one blob: per level ask price, ask size, bid price, bid size."""
    flat = [v for u in units for v in (u.ask_price, u.ask_size, u.bid_price, u.bid_size)]
    return struct.pack(f"<{len(flat)}d", *flat)


def unpack_units(blob: bytes) -> tuple[OrderbookUnit, ...]:
    """``pack_units`` undone."""
    flat = struct.unpack(f"<{len(blob) // 8}d", blob)
    return tuple(OrderbookUnit(*flat[i : i + 4]) for i in range(0, len(flat), 4))


def orderbook_row(book: Orderbook) -> tuple[Any, ...]:
    """``book`` as the columns of an orderbooks row (``ORDERBOOK_COLUMNS``)."""
    return (
        book.market,
        book.ms,
        book.level,
        book.total_ask_size,
        book.total_bid_size,
        pack_units(book.units),
    )


def orderbook_of_row(row: Sequence[Any]) -> Orderbook:
    """An orderbooks row back as the ``Orderbook`` it was written from."""
    market, ms, level, total_ask, total_bid, units = row
    return Orderbook(
        market, int(ms), float(total_ask), float(total_bid), unpack_units(bytes(units)), level
    )


def ticker_row(ticker: Ticker) -> tuple[Any, ...]:
    """``ticker`` as the columns of a tickers row (``TICKER_COLUMNS``: its fields in order)."""
    return (
        ticker.market,
        ticker.ms,
        ticker.trade_ms,
        ticker.price,
        ticker.open,
        ticker.high,
        ticker.low,
        ticker.prev_close,
        ticker.change,
        ticker.change_price,
        ticker.change_rate,
        ticker.trade_volume,
        ticker.acc_volume,
        ticker.acc_value,
        ticker.acc_volume_24h,
        ticker.acc_value_24h,
        ticker.high_52w,
        ticker.high_52w_date,
        ticker.low_52w,
        ticker.low_52w_date,
        ticker.side,
        ticker.acc_ask_volume,
        ticker.acc_bid_volume,
        ticker.market_state,
        ticker.delisting_date,
    )


def ticker_of_row(row: Sequence[Any]) -> Ticker:
    """A tickers row back as the ``Ticker`` it was written from."""
    (market, ms, trade_ms, price, open_, high, low, prev_close, change, change_price,
     change_rate, trade_volume, acc_volume, acc_value, acc_volume_24h, acc_value_24h,
     high_52w, high_52w_date, low_52w, low_52w_date, side, acc_ask_volume, acc_bid_volume,
     market_state, delisting_date) = row  # fmt: skip
    return Ticker(
        market, int(ms), int(trade_ms), float(price), float(open_), float(high), float(low),
        float(prev_close), change, float(change_price), float(change_rate),
        float(trade_volume), float(acc_volume), float(acc_value), float(acc_volume_24h),
        float(acc_value_24h), float(high_52w), high_52w_date, float(low_52w), low_52w_date,
        side, _float_or_none(acc_ask_volume), _float_or_none(acc_bid_volume), market_state,
        delisting_date,
    )  # fmt: skip


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


# volume, best_ask_size, best_bid_size in TRADE_COLUMNS: the sizes SQLite packs
_SIZES = (4, 9, 11)


def packed_trade_row(trade: Trade) -> tuple[Any, ...]:
    """``trade_row`` with its sizes packed (``pack_size``), as SQLite keeps it."""
    row = list(trade_row(trade))
    for at in _SIZES:
        row[at] = pack_size(row[at])
    return tuple(row)


def trade_of_packed_row(row: Sequence[Any]) -> Trade:
    """``packed_trade_row`` undone."""
    values = list(row)
    for at in _SIZES:
        values[at] = unpack_size(values[at])
    return trade_of_row(values)


def gap_row(gap: TradeGap) -> tuple[Any, ...]:
    """``gap`` as the columns of a trade_gaps row (``GAP_COLUMNS``)."""
    return (gap.market, gap.from_seq, gap.to_seq, gap.from_ms, gap.to_ms, gap.reason, gap.found_ms)


def gap_of_row(row: Sequence[Any]) -> TradeGap:
    """A trade_gaps row back as the ``TradeGap`` it was written from."""
    market, from_seq, to_seq, from_ms, to_ms, reason, found_ms = row
    return TradeGap(
        str(market), int(from_seq), int(to_seq), int(from_ms), int(to_ms), str(reason),
        int(found_ms),
    )  # fmt: skip


def span_of_row(row: Sequence[Any] | None) -> tuple[int, int] | None:
    """A ``SELECT MIN(ms), MAX(ms)`` row as (first, last); None when nothing was found."""
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])
