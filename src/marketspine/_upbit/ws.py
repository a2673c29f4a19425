"""Upbit's WebSocket wire JSON, DEFAULT and SIMPLE formats, decoded into records.

One struct per format holds the fields of every stream type (all optional): one pass of
msgspec decodes any frame, and the type field says which record to build.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec

from .._base.time import parse_naive_utc
from .._base.timeframes import WS_CANDLE_TYPES
from ..errors import UpstreamError
from ..records import (
    Candle,
    Change,
    Orderbook,
    OrderbookUnit,
    Side,
    Ticker,
    Trade,
    WsError,
    WsStatus,
)
from .decode import decode_wire

__all__ = ["WsMessage", "decode_ws", "decode_ws_frame"]


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
    acc_ask_volume: float | None = None
    acc_bid_volume: float | None = None
    market_state: str | None = None
    delisting_date: Any = None  # "a date or null": kept only as a string (see _text)
    # ticker and trade; None when absent (a trade then counts as BID, as before)
    ask_bid: Side | None = None
    # trade
    sequential_id: int = 0
    best_ask_price: float | None = None
    best_ask_size: float | None = None
    best_bid_price: float | None = None
    best_bid_size: float | None = None
    # orderbook
    total_ask_size: float = 0.0
    total_bid_size: float = 0.0
    orderbook_units: list[_WsUnitDefault] = []
    level: float = 0.0
    # candle
    candle_date_time_utc: str = ""
    candle_acc_trade_volume: float = 0.0
    candle_acc_trade_price: float = 0.0
    stream_type: str = ""  # SNAPSHOT (the first frame per code of an answer) or REALTIME
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
    aav: float | None = None
    abv: float | None = None
    ms: str | None = None
    dd: Any = None
    ab: Side | None = None
    sid: int = 0
    bap: float | None = None
    bas: float | None = None
    bbp: float | None = None
    bbs: float | None = None
    tas: float = 0.0
    tbs: float = 0.0
    obu: list[_WsUnitSimple] = []
    lv: float = 0.0
    cdttmu: str = ""
    catv: float = 0.0
    catp: float = 0.0
    st: str = ""
    status: str | None = None
    error: _WsError | None = None


_ws_default_decoder = msgspec.json.Decoder(_WsDefault)
_ws_simple_decoder = msgspec.json.Decoder(_WsSimple)

WsMessage: TypeAlias = Ticker | Trade | Orderbook | Candle | WsStatus | WsError


def _signed(change: Change, unsigned: float) -> float:
    # WebSocket trades send the change unsigned next to RISE/EVEN/FALL; REST sends it signed.
    return -abs(unsigned) if change == "FALL" else abs(unsigned)


def _text(value: Any) -> str | None:
    # Upbit documents delisting_date only as "a date or null" and has only been seen sending
    # null: a string is kept as sent, any other shape dropped rather than failing the frame.
    return value if isinstance(value, str) else None


def decode_ws(frame: bytes) -> WsMessage:
    """The record in one WebSocket frame, in DEFAULT or SIMPLE format: a Ticker, Trade,
    Orderbook or Candle; a WsStatus for keep-alive answers; a WsError for error frames.

    Raises UpstreamError for frames that are not JSON objects or carry an unknown type.
    """
    return decode_ws_frame(frame)[0]


def decode_ws_frame(frame: bytes) -> tuple[WsMessage, bool]:
    """As ``decode_ws``, and whether the frame is a SNAPSHOT (``stream_type``): the first
    frame per code of the answer to a subscription request."""
    # SIMPLE frames key the type as "ty"; DEFAULT frames never contain that key.
    if b'"ty"' in frame:
        return decode_wire(_ws_simple_decoder, frame, "WebSocket frame", _simple_frame)
    return decode_wire(_ws_default_decoder, frame, "WebSocket frame", _default_frame)


def _simple_frame(m: _WsSimple) -> tuple[WsMessage, bool]:
    return _from_simple(m), m.st == "SNAPSHOT"


def _default_frame(m: _WsDefault) -> tuple[WsMessage, bool]:
    return _from_default(m), m.stream_type == "SNAPSHOT"


def _unknown_frame(kind: str | None) -> UpstreamError:
    return UpstreamError(
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
            m.ask_bid,
            m.acc_ask_volume,
            m.acc_bid_volume,
            m.market_state,
            _text(m.delisting_date),
        )
    if kind == "trade":
        return Trade(
            m.code,
            m.trade_timestamp,
            m.trade_price,
            m.trade_volume,
            m.ask_bid or "BID",
            m.sequential_id,
            m.prev_closing_price,
            _signed(m.change, m.change_price),
            m.best_ask_price,
            m.best_ask_size,
            m.best_bid_price,
            m.best_bid_size,
        )
    if kind == "orderbook":
        units = tuple(
            OrderbookUnit(u.ask_price, u.ask_size, u.bid_price, u.bid_size)
            for u in m.orderbook_units
        )
        return Orderbook(m.code, m.timestamp, m.total_ask_size, m.total_bid_size, units, m.level)
    if kind is not None and kind in WS_CANDLE_TYPES:
        return Candle(
            m.code,
            WS_CANDLE_TYPES[kind].name,
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
            m.ab,
            m.aav,
            m.abv,
            m.ms,
            _text(m.dd),
        )
    if kind == "trade":
        return Trade(
            m.cd,
            m.ttms,
            m.tp,
            m.tv,
            m.ab or "BID",
            m.sid,
            m.pcp,
            _signed(m.c, m.cp),
            m.bap,
            m.bas,
            m.bbp,
            m.bbs,
        )
    if kind == "orderbook":
        units = tuple(OrderbookUnit(u.ap, u.as_, u.bp, u.bs) for u in m.obu)
        return Orderbook(m.cd, m.tms, m.tas, m.tbs, units, m.lv)
    if kind is not None and kind in WS_CANDLE_TYPES:
        return Candle(
            m.cd,
            WS_CANDLE_TYPES[kind].name,
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
