"""Typed market-data records: the same record whether it came over REST or WebSocket.

Times are UTC epoch milliseconds. Records are msgspec Structs: cheap to build, compare
and encode. ``_upbit.rest`` and ``_upbit.ws`` decode Upbit's wire JSON into them.

A few fields only Upbit's WebSocket sends (a trade's best quotes, a ticker's day volume by
side and market state) come last, with a None default: None from REST, which does not send
them. Equality compares every field, so a WebSocket trade and the REST copy of it differ
there; a trade's identity is its ``(market, seq)``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "Candle",
    "Change",
    "Instrument",
    "MarketInfo",
    "Orderbook",
    "OrderbookUnit",
    "Side",
    "Ticker",
    "Trade",
    "WsError",
    "WsStatus",
]

Side = Literal["BID", "ASK"]
Change = Literal["RISE", "EVEN", "FALL"]


class Candle(msgspec.Struct, frozen=True, gc=False):
    """One candle. ``start_ms`` is the window start (Upbit's ``candle_date_time_utc``);
    ``last_trade_ms`` is Upbit's ``timestamp`` (the last tick stored in the window), which
    says nothing about the window's bounds."""

    market: str
    timeframe: str  # Timeframe.name: 1s 1m ... 1h 4h 1d 1w 1M 1y
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float  # candle_acc_trade_volume, base currency
    value: float  # candle_acc_trade_price, quote currency
    last_trade_ms: int


class Trade(msgspec.Struct, frozen=True, gc=False):
    """One trade. ``side`` is the taker's side (BID = a taker buy). ``seq`` is Upbit's
    ``sequential_id``: unique per trade, but not a guaranteed order. ``change_price`` is
    signed (negative on a falling day), on REST and WebSocket alike."""

    market: str
    ms: int
    price: float
    volume: float
    side: Side
    seq: int
    prev_close: float
    change_price: float
    # The book's best quotes when the trade happened: WebSocket only (None from REST).
    best_ask_price: float | None = None
    best_ask_size: float | None = None
    best_bid_price: float | None = None
    best_bid_size: float | None = None


class Ticker(msgspec.Struct, frozen=True, gc=False):
    """A market's ticker. ``ms`` is when Upbit generated it, ``trade_ms`` the last trade.
    Day fields (open/high/low, ``acc_*``) run from 00:00 UTC; ``change_price`` and
    ``change_rate`` are signed. The 52-week dates are ``yyyy-MM-dd``."""

    market: str
    ms: int
    trade_ms: int
    price: float
    open: float
    high: float
    low: float
    prev_close: float
    change: Change
    change_price: float
    change_rate: float
    trade_volume: float
    acc_volume: float
    acc_value: float
    acc_volume_24h: float
    acc_value_24h: float
    high_52w: float
    high_52w_date: str
    low_52w: float
    low_52w_date: str
    # WebSocket only (None from REST, which does not send them):
    side: Side | None = None  # the last trade's taker side (Upbit's ask_bid)
    acc_ask_volume: float | None = None  # the day's volume taken by sells (ASK) ...
    acc_bid_volume: float | None = None  # ... and by buys (BID)
    market_state: str | None = None  # PREVIEW, ACTIVE or DELISTED
    delisting_date: str | None = None  # when a delisting is scheduled, as Upbit writes it


class OrderbookUnit(msgspec.Struct, frozen=True, gc=False):
    """One level of a book; a thin side is padded with zero prices and sizes."""

    ask_price: float
    ask_size: float
    bid_price: float
    bid_size: float


class Orderbook(msgspec.Struct, frozen=True, gc=False):
    """A full book (Upbit never sends deltas). ``ms`` is the book's last change;
    ``level`` is the price aggregation (0 = native tick)."""

    market: str
    ms: int
    total_ask_size: float
    total_bid_size: float
    units: tuple[OrderbookUnit, ...]
    level: float


class MarketInfo(msgspec.Struct, frozen=True):
    """A listed market. ``warning`` is the investment-warning designation (Korea's
    ``market_event.warning``, or ``market_warning == "CAUTION"`` on the other sites);
    ``caution`` holds Korea's per-alert flags and is empty where Upbit sends none.
    ``delisted``: upstream no longer lists it, the store still holds its candles
    (``Spine.markets(include_delisted=True)``)."""

    market: str
    korean_name: str | None
    english_name: str
    warning: bool
    caution: dict[str, bool]
    delisted: bool = False


class Instrument(msgspec.Struct, frozen=True, gc=False):
    """A market's current price tick and the orderbook aggregation levels it supports."""

    market: str
    quote_currency: str
    tick_size: float
    supported_levels: tuple[float, ...]


class WsStatus(msgspec.Struct, frozen=True, gc=False):
    """A keep-alive answer (``{"status":"UP"}``)."""

    status: str


class WsError(msgspec.Struct, frozen=True, gc=False):
    """An error frame (``NO_TICKET``, ``WRONG_FORMAT``, ...); the server closes next."""

    name: str
    message: str
