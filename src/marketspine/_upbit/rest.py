"""Upbit's REST wire JSON: the shapes of its answers, decoded into records.

Typed msgspec decoders: numbers are never routed through a looser type, so a trade's
17-digit ``sequential_id`` (beyond 2**53) stays an exact ``int``.
"""

from __future__ import annotations

import datetime as dt
import sys

import msgspec

from .._base.timeframes import Timeframe
from ..records import (
    Candle,
    Change,
    Instrument,
    MarketInfo,
    Orderbook,
    OrderbookUnit,
    Side,
    Ticker,
    Trade,
)
from .decode import decode_wire

__all__ = [
    "decode_candles",
    "decode_instruments",
    "decode_markets",
    "decode_orderbooks",
    "decode_tickers",
    "decode_trades",
]


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


_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_ONE_MS = dt.timedelta(milliseconds=1)


def _epoch_ms(moment: dt.datetime) -> int:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return (moment - _NAIVE_EPOCH) // _ONE_MS


def decode_candles(body: bytes, timeframe: Timeframe) -> list[Candle]:
    """Candles of a REST candle response, in the response's order (newest first).

    Raises UpstreamError when the body is not Upbit's candle JSON.
    """
    name = timeframe.name
    # Interned: every candle of a market shares one market string, as the candles read
    # from the store do, so a window holds it once (about 60 bytes a candle less).
    return [
        Candle(
            sys.intern(r.market),
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
        for r in decode_wire(_candles_decoder, body, "candle")
    ]


def decode_trades(body: bytes) -> list[Trade]:
    """Trades of a ``/v1/trades/ticks`` response, in the response's order (newest first).

    Raises UpstreamError when the body is not Upbit's trade JSON.
    """
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
        for r in decode_wire(_trades_decoder, body, "trade")
    ]


def decode_tickers(body: bytes) -> list[Ticker]:
    """Tickers of a ``/v1/ticker`` or ``/v1/ticker/all`` response.

    Raises UpstreamError when the body is not Upbit's ticker JSON.
    """
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
        for r in decode_wire(_tickers_decoder, body, "ticker")
    ]


def decode_orderbooks(body: bytes) -> list[Orderbook]:
    """Books of a ``/v1/orderbook`` response.

    Raises UpstreamError when the body is not Upbit's orderbook JSON.
    """
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
        for r in decode_wire(_orderbooks_decoder, body, "orderbook")
    ]


def decode_markets(body: bytes) -> list[MarketInfo]:
    """Markets of a ``/v1/market/all`` response, with or without details.

    Raises UpstreamError when the body is not Upbit's market JSON.
    """
    result = []
    for r in decode_wire(_markets_decoder, body, "market"):
        if r.market_event is not None:
            warning, caution = r.market_event.warning, dict(r.market_event.caution)
        else:
            warning, caution = r.market_warning == "CAUTION", {}
        result.append(MarketInfo(r.market, r.korean_name, r.english_name, warning, caution))
    return result


def decode_instruments(body: bytes) -> list[Instrument]:
    """Instruments of a ``/v1/orderbook/instruments`` response (Upbit sends the tick and
    levels as strings; they become floats here).

    Raises UpstreamError when the body is not Upbit's instrument JSON.
    """
    return decode_wire(
        _instruments_decoder,
        body,
        "instrument",
        lambda raw: [
            Instrument(
                r.market,
                r.quote_currency,
                float(r.tick_size),
                tuple(float(level) for level in r.supported_levels),
            )
            for r in raw
        ],
    )
