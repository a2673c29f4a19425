"""Upbit's quotation REST API, tickers and orderbooks (``/v1/ticker``, ``/v1/ticker/all``,
``/v1/orderbook``, ``/v1/orderbook/instruments``, ``/v1/orderbook/supported_levels``) over
the simulated history; see ``_rest`` for the conventions every handler follows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from .._upbit.levels import aggregate_levels, is_supported_level, supported_levels
from .._upbit.limits import MAX_BOOK_LEVELS
from .._upbit.params import quote_values
from .._upbit.rest_rows import instrument_row, orderbook_row, supported_levels_row, ticker_row
from .._upbit.texts import NOT_FOUND, WRONG_VALUE
from .._upbit.ticks import tick_size
from ..errors import InvalidRequestError, UnknownMarketError
from ..records import Instrument, Orderbook, OrderbookUnit, Ticker
from ._rest_params import (
    Json,
    codes_param,
    int_param,
    listed_market,
    required,
    round8,
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
    quotes = quote_values(text)
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
        prev = state.prev_close
        signed = round8(last.price - prev)
        ticker = Ticker(
            market=market.code,
            ms=state.ms,
            trade_ms=last.ms,
            price=last.price,
            open=state.day_open,
            high=state.day_high,
            low=state.day_low,
            prev_close=prev,
            change="RISE" if signed > 0 else "FALL" if signed < 0 else "EVEN",
            change_price=signed,
            change_rate=round(signed / prev, 10) if prev else 0.0,
            trade_volume=last.volume,
            acc_volume=state.acc_volume,
            acc_value=state.acc_value,
            acc_volume_24h=state.acc_volume_24h,
            acc_value_24h=state.acc_value_24h,
            high_52w=state.high_52w,
            high_52w_date=state.high_52w_date,
            low_52w=state.low_52w,
            low_52w_date=state.low_52w_date,
        )
        rows.append(ticker_row(ticker))
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
    pairs = max(len(asks), len(bids))
    zero = (0, 0)
    units = tuple(
        OrderbookUnit(
            *(asks[i] if i < len(asks) else zero),
            *(bids[i] if i < len(bids) else zero),
        )
        for i in range(pairs)
    )
    record = Orderbook(
        market.code,
        book.ms,
        round8(sum(size for _, size in asks)),
        round8(sum(size for _, size in bids)),
        units,
        level,
    )
    return orderbook_row(record, depth, with_level=sim.config.region == "kr")


def orderbook_instruments(request: Request, sim: SimState) -> Json:
    """Tick size (a string) and supported levels (strings) of each of ``markets``."""
    now_ms = sim.now_ms()
    rows: Json = []
    for code in codes_param(request.query_params):
        market = listed_market(sim, code, now_ms)
        instrument = Instrument(
            market.code, market.quote, _tick_of(sim, market, now_ms), _levels(sim, market, now_ms)
        )
        rows.append(instrument_row(instrument))
    return rows


def orderbook_supported_levels(request: Request, sim: SimState) -> Json:
    """Deprecated by Upbit but still served: every market's levels as numbers."""
    now_ms = sim.now_ms()
    return [
        supported_levels_row(market.code, _levels(sim, market, now_ms))
        for market in sim.history.markets
        if sim.is_listed(market, now_ms)
    ]
