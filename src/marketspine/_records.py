"""Typed market-data records: the same record whether it came over REST or WebSocket.

Times are UTC epoch milliseconds. Records are msgspec Structs: cheap to build, compare
and encode. The ``decode_*`` functions turn Upbit's wire JSON into records with typed
msgspec decoders: numbers are never routed through a looser type, so a trade's 17-digit
``sequential_id`` (beyond 2**53) stays an exact ``int``.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from ._errors import InvalidRequestError
from ._time import parse_naive_utc
from ._timeframes import Timeframe

__all__ = [
    "Candle",
    "Instrument",
    "MarketInfo",
    "Orderbook",
    "OrderbookUnit",
    "Ticker",
    "Trade",
    "WsError",
    "WsStatus",
    "decode_candles",
    "decode_instruments",
    "decode_markets",
    "decode_orderbooks",
    "decode_tickers",
    "decode_trades",
    "decode_ws",
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
    ``caution`` holds Korea's per-alert flags and is empty where Upbit sends none."""

    market: str
    korean_name: str | None
    english_name: str
    warning: bool
    caution: dict[str, bool]


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


# --- REST wire shapes -------------------------------------------------------------------


class _RestCandle(msgspec.Struct, gc=False):
    market: str
    # msgspec parses the naive ISO time in C; the hot path is then one subtraction.
    candle_date_time_utc: dt.datetime
    opening_price: float
    high_price: float
    low_price: float
    trade_price: float
    timestamp: int
    candle_acc_trade_price: float
    candle_acc_trade_volume: float


class _RestTrade(msgspec.Struct, gc=False):
    market: str
    timestamp: int
    trade_price: float
    trade_volume: float
    prev_closing_price: float
    change_price: float
    ask_bid: Side
    sequential_id: int


class _RestTicker(msgspec.Struct, gc=False):
    market: str
    trade_timestamp: int
    opening_price: float
    high_price: float
    low_price: float
    trade_price: float
    prev_closing_price: float
    change: Change
    signed_change_price: float
    signed_change_rate: float
    trade_volume: float
    acc_trade_price: float
    acc_trade_volume: float
    acc_trade_price_24h: float
    acc_trade_volume_24h: float
    highest_52_week_price: float
    highest_52_week_date: str
    lowest_52_week_price: float
    lowest_52_week_date: str
    timestamp: int


class _RestUnit(msgspec.Struct, gc=False):
    ask_price: float
    bid_price: float
    ask_size: float
    bid_size: float


class _RestOrderbook(msgspec.Struct, gc=False):
    market: str
    timestamp: int
    total_ask_size: float
    total_bid_size: float
    orderbook_units: list[_RestUnit]
    level: float = 0.0  # absent on the regional sites


class _MarketEvent(msgspec.Struct):
    warning: bool = False
    caution: dict[str, bool] = {}


class _RestMarket(msgspec.Struct):
    market: str
    english_name: str
    korean_name: str | None = None
    market_event: _MarketEvent | None = None
    market_warning: str | None = None


class _RestInstrument(msgspec.Struct, gc=False):
    market: str
    quote_currency: str
    tick_size: str
    supported_levels: tuple[str, ...] = ("0",)  # may be absent on the regional sites


_candles_decoder = msgspec.json.Decoder(list[_RestCandle])
_trades_decoder = msgspec.json.Decoder(list[_RestTrade])
_tickers_decoder = msgspec.json.Decoder(list[_RestTicker])
_orderbooks_decoder = msgspec.json.Decoder(list[_RestOrderbook])
_markets_decoder = msgspec.json.Decoder(list[_RestMarket])
_instruments_decoder = msgspec.json.Decoder(list[_RestInstrument])


def _malformed(what: str, exc: Exception) -> InvalidRequestError:
    return InvalidRequestError(f"malformed Upbit {what} JSON: {exc}")


_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_ONE_MS = dt.timedelta(milliseconds=1)


def _epoch_ms(moment: dt.datetime) -> int:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return (moment - _NAIVE_EPOCH) // _ONE_MS


def decode_candles(body: bytes, timeframe: Timeframe) -> list[Candle]:
    """Candles of a REST candle response, in the response's order (newest first).

    Raises InvalidRequestError when the body is not Upbit's candle JSON.
    """
    try:
        raw = _candles_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _malformed("candle", exc) from exc
    name = timeframe.name
    return [
        Candle(
            r.market,
            name,
            _epoch_ms(r.candle_date_time_utc),
            r.opening_price,
            r.high_price,
            r.low_price,
            r.trade_price,
            r.candle_acc_trade_volume,
            r.candle_acc_trade_price,
            r.timestamp,
        )
        for r in raw
    ]


def decode_trades(body: bytes) -> list[Trade]:
    """Trades of a ``/v1/trades/ticks`` response, in the response's order (newest first).

    Raises InvalidRequestError when the body is not Upbit's trade JSON.
    """
    try:
        raw = _trades_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _malformed("trade", exc) from exc
    return [
        Trade(
            r.market,
            r.timestamp,
            r.trade_price,
            r.trade_volume,
            r.ask_bid,
            r.sequential_id,
            r.prev_closing_price,
            r.change_price,
        )
        for r in raw
    ]


def decode_tickers(body: bytes) -> list[Ticker]:
    """Tickers of a ``/v1/ticker`` or ``/v1/ticker/all`` response.

    Raises InvalidRequestError when the body is not Upbit's ticker JSON.
    """
    try:
        raw = _tickers_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _malformed("ticker", exc) from exc
    return [
        Ticker(
            r.market,
            r.timestamp,
            r.trade_timestamp,
            r.trade_price,
            r.opening_price,
            r.high_price,
            r.low_price,
            r.prev_closing_price,
            r.change,
            r.signed_change_price,
            r.signed_change_rate,
            r.trade_volume,
            r.acc_trade_volume,
            r.acc_trade_price,
            r.acc_trade_volume_24h,
            r.acc_trade_price_24h,
            r.highest_52_week_price,
            r.highest_52_week_date,
            r.lowest_52_week_price,
            r.lowest_52_week_date,
        )
        for r in raw
    ]


def decode_orderbooks(body: bytes) -> list[Orderbook]:
    """Books of a ``/v1/orderbook`` response.

    Raises InvalidRequestError when the body is not Upbit's orderbook JSON.
    """
    try:
        raw = _orderbooks_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _malformed("orderbook", exc) from exc
    return [
        Orderbook(
            r.market,
            r.timestamp,
            r.total_ask_size,
            r.total_bid_size,
            tuple(
                OrderbookUnit(u.ask_price, u.ask_size, u.bid_price, u.bid_size)
                for u in r.orderbook_units
            ),
            r.level,
        )
        for r in raw
    ]


def decode_markets(body: bytes) -> list[MarketInfo]:
    """Markets of a ``/v1/market/all`` response, with or without details.

    Raises InvalidRequestError when the body is not Upbit's market JSON.
    """
    try:
        raw = _markets_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _malformed("market", exc) from exc
    result = []
    for r in raw:
        if r.market_event is not None:
            warning, caution = r.market_event.warning, dict(r.market_event.caution)
        else:
            warning, caution = r.market_warning == "CAUTION", {}
        result.append(MarketInfo(r.market, r.korean_name, r.english_name, warning, caution))
    return result


def decode_instruments(body: bytes) -> list[Instrument]:
    """Instruments of a ``/v1/orderbook/instruments`` response (Upbit sends the tick and
    levels as strings; they become floats here).

    Raises InvalidRequestError when the body is not Upbit's instrument JSON.
    """
    try:
        raw = _instruments_decoder.decode(body)
        return [
            Instrument(
                r.market,
                r.quote_currency,
                float(r.tick_size),
                tuple(float(level) for level in r.supported_levels),
            )
            for r in raw
        ]
    except (msgspec.DecodeError, ValueError) as exc:
        raise _malformed("instrument", exc) from exc


# --- WebSocket wire shapes ----------------------------------------------------------------
# One struct per format holding the fields of every stream type (all optional): one pass
# of msgspec decodes any frame, and the type field says which record to build.


class _WsError(msgspec.Struct, gc=False):
    name: str | int
    message: str


class _WsUnitDefault(msgspec.Struct, gc=False):
    ask_price: float
    bid_price: float
    ask_size: float
    bid_size: float


class _WsUnitSimple(msgspec.Struct, gc=False):
    ap: float
    bp: float
    as_: float = msgspec.field(name="as")
    bs: float


class _WsDefault(msgspec.Struct, gc=False):
    type: str | None = None
    code: str = ""
    timestamp: int = 0
    # ticker and trade
    trade_price: float = 0.0
    prev_closing_price: float = 0.0
    change: Change = "EVEN"
    change_price: float = 0.0
    trade_volume: float = 0.0
    trade_timestamp: int = 0
    # ticker
    opening_price: float = 0.0
    high_price: float = 0.0
    low_price: float = 0.0
    signed_change_price: float = 0.0
    signed_change_rate: float = 0.0
    acc_trade_volume: float = 0.0
    acc_trade_price: float = 0.0
    acc_trade_volume_24h: float = 0.0
    acc_trade_price_24h: float = 0.0
    highest_52_week_price: float = 0.0
    highest_52_week_date: str = ""
    lowest_52_week_price: float = 0.0
    lowest_52_week_date: str = ""
    # trade
    ask_bid: Side = "BID"
    sequential_id: int = 0
    # orderbook
    total_ask_size: float = 0.0
    total_bid_size: float = 0.0
    orderbook_units: list[_WsUnitDefault] = []
    level: float = 0.0
    # candle
    candle_date_time_utc: str = ""
    candle_acc_trade_volume: float = 0.0
    candle_acc_trade_price: float = 0.0
    # keep-alive and errors
    status: str | None = None
    error: _WsError | None = None


class _WsSimple(msgspec.Struct, gc=False):
    ty: str | None = None
    cd: str = ""
    tms: int = 0
    tp: float = 0.0
    pcp: float = 0.0
    c: Change = "EVEN"
    cp: float = 0.0
    tv: float = 0.0
    ttms: int = 0
    op: float = 0.0
    hp: float = 0.0
    lp: float = 0.0
    scp: float = 0.0
    scr: float = 0.0
    atv: float = 0.0
    atp: float = 0.0
    atv24h: float = 0.0
    atp24h: float = 0.0
    h52wp: float = 0.0
    h52wdt: str = ""
    l52wp: float = 0.0
    l52wdt: str = ""
    ab: Side = "BID"
    sid: int = 0
    tas: float = 0.0
    tbs: float = 0.0
    obu: list[_WsUnitSimple] = []
    lv: float = 0.0
    cdttmu: str = ""
    catv: float = 0.0
    catp: float = 0.0
    status: str | None = None
    error: _WsError | None = None


_ws_default_decoder = msgspec.json.Decoder(_WsDefault)
_ws_simple_decoder = msgspec.json.Decoder(_WsSimple)

# WebSocket candle types (``candle.60m``) to timeframe names (``1h``).
_WS_CANDLE_TIMEFRAMES = {
    "candle.1s": "1s",
    "candle.1m": "1m",
    "candle.3m": "3m",
    "candle.5m": "5m",
    "candle.10m": "10m",
    "candle.15m": "15m",
    "candle.30m": "30m",
    "candle.60m": "1h",
    "candle.240m": "4h",
}

WsMessage = Ticker | Trade | Orderbook | Candle | WsStatus | WsError


def _signed(change: Change, unsigned: float) -> float:
    # WebSocket trades send the change unsigned next to RISE/EVEN/FALL; REST sends it signed.
    return -abs(unsigned) if change == "FALL" else abs(unsigned)


def decode_ws(frame: bytes) -> WsMessage:
    """The record in one WebSocket frame, in DEFAULT or SIMPLE format: a Ticker, Trade,
    Orderbook or Candle; a WsStatus for keep-alive answers; a WsError for error frames.

    Raises InvalidRequestError for frames that are not JSON objects or carry an unknown type.
    """
    # SIMPLE frames key the type as "ty"; DEFAULT frames never contain that key.
    simple = b'"ty"' in frame
    try:
        if simple:
            return _from_simple(_ws_simple_decoder.decode(frame))
        return _from_default(_ws_default_decoder.decode(frame))
    except msgspec.DecodeError as exc:
        raise _malformed("WebSocket frame", exc) from exc


def _unknown_frame(kind: str | None) -> InvalidRequestError:
    return InvalidRequestError(
        f"unknown WebSocket frame type {kind!r}: expected ticker, trade, orderbook or candle.*"
    )


def _from_default(m: _WsDefault) -> WsMessage:
    kind = m.type
    if kind == "ticker":
        return Ticker(
            m.code,
            m.timestamp,
            m.trade_timestamp,
            m.trade_price,
            m.opening_price,
            m.high_price,
            m.low_price,
            m.prev_closing_price,
            m.change,
            m.signed_change_price,
            m.signed_change_rate,
            m.trade_volume,
            m.acc_trade_volume,
            m.acc_trade_price,
            m.acc_trade_volume_24h,
            m.acc_trade_price_24h,
            m.highest_52_week_price,
            m.highest_52_week_date,
            m.lowest_52_week_price,
            m.lowest_52_week_date,
        )
    if kind == "trade":
        return Trade(
            m.code,
            m.trade_timestamp,
            m.trade_price,
            m.trade_volume,
            m.ask_bid,
            m.sequential_id,
            m.prev_closing_price,
            _signed(m.change, m.change_price),
        )
    if kind == "orderbook":
        units = tuple(
            OrderbookUnit(u.ask_price, u.ask_size, u.bid_price, u.bid_size)
            for u in m.orderbook_units
        )
        return Orderbook(m.code, m.timestamp, m.total_ask_size, m.total_bid_size, units, m.level)
    if kind is not None and kind in _WS_CANDLE_TIMEFRAMES:
        return Candle(
            m.code,
            _WS_CANDLE_TIMEFRAMES[kind],
            parse_naive_utc(m.candle_date_time_utc),
            m.opening_price,
            m.high_price,
            m.low_price,
            m.trade_price,
            m.candle_acc_trade_volume,
            m.candle_acc_trade_price,
            m.timestamp,
        )
    if kind is None and m.error is not None:
        return WsError(str(m.error.name), m.error.message)
    if kind is None and m.status is not None:
        return WsStatus(m.status)
    raise _unknown_frame(kind)


def _from_simple(m: _WsSimple) -> WsMessage:
    kind = m.ty
    if kind == "ticker":
        return Ticker(
            m.cd,
            m.tms,
            m.ttms,
            m.tp,
            m.op,
            m.hp,
            m.lp,
            m.pcp,
            m.c,
            m.scp,
            m.scr,
            m.tv,
            m.atv,
            m.atp,
            m.atv24h,
            m.atp24h,
            m.h52wp,
            m.h52wdt,
            m.l52wp,
            m.l52wdt,
        )
    if kind == "trade":
        return Trade(m.cd, m.ttms, m.tp, m.tv, m.ab, m.sid, m.pcp, _signed(m.c, m.cp))
    if kind == "orderbook":
        units = tuple(OrderbookUnit(u.ap, u.as_, u.bp, u.bs) for u in m.obu)
        return Orderbook(m.cd, m.tms, m.tas, m.tbs, units, m.lv)
    if kind is not None and kind in _WS_CANDLE_TIMEFRAMES:
        return Candle(
            m.cd,
            _WS_CANDLE_TIMEFRAMES[kind],
            parse_naive_utc(m.cdttmu),
            m.op,
            m.hp,
            m.lp,
            m.tp,
            m.catv,
            m.catp,
            m.tms,
        )
    raise _unknown_frame(kind)
