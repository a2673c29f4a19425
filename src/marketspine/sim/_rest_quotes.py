"""Upbit's quotation REST API, tickers and orderbooks (``/v1/ticker``, ``/v1/ticker/all``,
``/v1/orderbook``, ``/v1/orderbook/instruments``, ``/v1/orderbook/supported_levels``) over
the simulated history; see ``_rest`` for the conventions every handler follows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from .._base.time import KST_OFFSET_MS
from .._upbit.levels import aggregate_levels, is_supported_level, supported_levels
from .._upbit.ticks import tick_decimals, tick_size
from ..errors import InvalidRequestError, UnknownMarketError
from ._rest_params import (
    NOT_FOUND,
    WRONG_VALUE,
    Json,
    codes_param,
    int_param,
    json_number,
    listed_market,
    required,
    round8,
    stamp,
)

if TYPE_CHECKING:
    from ._state import SimState
    from ._universe import SimMarket

__all__ = [
    "orderbook",
    "orderbook_instruments",
    "orderbook_supported_levels",
    "ticker",
    "ticker_all",
]

MAX_BOOK_LEVELS = 30


# -- /v1/ticker, /v1/ticker/all ---------------------------------------------------------------


def ticker(request: Request, sim: SimState) -> Json:
    """Tickers of the ``markets`` (comma list or repeated keys); any unknown code → 404."""
    now_ms = sim.now_ms()
    markets = [listed_market(sim, code, now_ms) for code in codes_param(request.query_params)]
    return _tickers(sim, markets, now_ms)


def ticker_all(request: Request, sim: SimState) -> Json:
    """Tickers of every listed market of the ``quote_currencies`` (legacy ``quoteCurrencies``).
    An unknown quote currency is our choice of 404 ``Code not found``."""
    text = required(request.query_params, "quote_currencies", "quoteCurrencies")
    quotes = [q.strip().upper() for q in text.split(",") if q.strip()]
    now_ms = sim.now_ms()
    listed = [m for m in sim.history.markets if sim.is_listed(m, now_ms)]
    known = {m.quote for m in listed}
    for quote in quotes:
        if quote not in known:
            raise UnknownMarketError(quote, NOT_FOUND)
    return _tickers(sim, [m for m in listed if m.quote in quotes], now_ms)


def _tickers(sim: SimState, markets: list[SimMarket], now_ms: int) -> Json:
    rows: Json = []
    for market in markets:
        state = sim.history.ticker(market.code, now_ms)
        if state is None:  # listed but not traded yet: Upbit has no ticker either
            continue
        last = state.last
        utc = stamp(last.ms)
        kst = stamp(last.ms + KST_OFFSET_MS)
        prev = state.prev_close
        signed = round8(last.price - prev)
        signed_rate = round(signed / prev, 10) if prev else 0.0
        rows.append(
            {
                "market": market.code,
                "trade_date": utc[0:4] + utc[5:7] + utc[8:10],
                "trade_time": utc[11:13] + utc[14:16] + utc[17:19],
                "trade_date_kst": kst[0:4] + kst[5:7] + kst[8:10],
                "trade_time_kst": kst[11:13] + kst[14:16] + kst[17:19],
                "trade_timestamp": last.ms,
                "opening_price": state.day_open,
                "high_price": state.day_high,
                "low_price": state.day_low,
                "trade_price": last.price,
                "prev_closing_price": prev,
                "change": "RISE" if signed > 0 else "FALL" if signed < 0 else "EVEN",
                "change_price": abs(signed),
                "change_rate": abs(signed_rate),
                "signed_change_price": signed,
                "signed_change_rate": signed_rate,
                "trade_volume": last.volume,
                "acc_trade_price": state.acc_value,
                "acc_trade_price_24h": state.acc_value_24h,
                "acc_trade_volume": state.acc_volume,
                "acc_trade_volume_24h": state.acc_volume_24h,
                "highest_52_week_price": state.high_52w,
                "highest_52_week_date": state.high_52w_date,
                "lowest_52_week_price": state.low_52w,
                "lowest_52_week_date": state.low_52w_date,
                "timestamp": state.ms,
            }
        )
    return rows


# -- /v1/orderbook, /instruments, /supported_levels ---------------------------------------------


def _reference_price(sim: SimState, code: str, now_ms: int) -> float:
    last = sim.history.last_trade(code, now_ms)
    if last is not None:
        return float(last.price)
    book = sim.history.orderbook(code, now_ms, 1)
    return float(book.asks[0][0]) if book.asks else 1.0


def _tick_of(sim: SimState, market: SimMarket, now_ms: int) -> float:
    return tick_size(market.quote, _reference_price(sim, market.code, now_ms))


def _levels(sim: SimState, market: SimMarket, now_ms: int) -> tuple[float, ...]:
    """Price-aggregation levels of ``market`` at its current price band (the rule is shared
    with the WebSocket side: 0, then 10, 100 and 1000 ticks on Korea's KRW markets)."""
    return supported_levels(market.quote, _tick_of(sim, market, now_ms), sim.config.region)


def _decimal_text(value: float) -> str:
    """A tick or level the way Upbit spells it in strings: ``"1000"``, ``"0.00000001"``."""
    value = float(value)
    if value >= 1 or value == 0:
        return str(int(value)) if value.is_integer() else repr(value)
    return f"{value:.{tick_decimals(value)}f}"


def orderbook(request: Request, sim: SimState) -> Json:
    """Order books of ``markets``: ``count`` pairs (1..30, anything else → 30), optionally
    aggregated to a supported ``level`` (others give no book: 200 with ``[]``). Thin sides
    are padded with zero slots."""
    params = request.query_params
    now_ms = sim.now_ms()
    markets = [listed_market(sim, code, now_ms) for code in codes_param(params)]
    count_text = params.get("count")
    depth = MAX_BOOK_LEVELS if count_text is None else int_param(count_text)
    if not 1 <= depth <= MAX_BOOK_LEVELS:
        depth = MAX_BOOK_LEVELS
    level_text = params.get("level")
    try:
        level = 0.0 if level_text is None else float(level_text)
    except ValueError:
        raise InvalidRequestError(WRONG_VALUE) from None
    if not math.isfinite(level) or level < 0:
        raise InvalidRequestError(WRONG_VALUE)
    rows: Json = []
    for market in markets:
        if level and not is_supported_level(level, _levels(sim, market, now_ms)):
            continue
        rows.append(_book(sim, market, now_ms, depth, level))
    return rows


def _book(
    sim: SimState, market: SimMarket, now_ms: int, depth: int, level: float
) -> dict[str, Any]:
    if level:
        # Aggregated levels each swallow several native ones: ask for a deeper book.
        book = sim.history.orderbook(market.code, now_ms, depth * 10)
        asks, bids = aggregate_levels(book.asks, book.bids, level)
        asks, bids = asks[:depth], bids[:depth]
    else:
        book = sim.history.orderbook(market.code, now_ms, depth)
        asks, bids = list(book.asks[:depth]), list(book.bids[:depth])
    units = []
    for i in range(depth):
        ask_price, ask_size = asks[i] if i < len(asks) else (0, 0)
        bid_price, bid_size = bids[i] if i < len(bids) else (0, 0)
        units.append(
            {
                "bid_price": bid_price,
                "bid_size": bid_size,
                "ask_price": ask_price,
                "ask_size": ask_size,
            }
        )
    row: dict[str, Any] = {
        "market": market.code,
        "timestamp": book.ms,
        "total_ask_size": round8(sum(size for _, size in asks)),
        "total_bid_size": round8(sum(size for _, size in bids)),
        "orderbook_units": units,
    }
    if sim.config.region == "kr":
        row["level"] = json_number(level)
    return row


def orderbook_instruments(request: Request, sim: SimState) -> Json:
    """Tick size (a string) and supported levels (strings) of each of ``markets``."""
    now_ms = sim.now_ms()
    rows: Json = []
    for code in codes_param(request.query_params):
        market = listed_market(sim, code, now_ms)
        rows.append(
            {
                "market": market.code,
                "quote_currency": market.quote,
                "tick_size": _decimal_text(_tick_of(sim, market, now_ms)),
                "supported_levels": [_decimal_text(x) for x in _levels(sim, market, now_ms)],
            }
        )
    return rows


def orderbook_supported_levels(request: Request, sim: SimState) -> Json:
    """Deprecated by Upbit but still served: every market's levels as numbers."""
    now_ms = sim.now_ms()
    return [
        {
            "market": market.code,
            "supported_levels": [json_number(x) for x in _levels(sim, market, now_ms)],
        }
        for market in sim.history.markets
        if sim.is_listed(market, now_ms)
    ]
