"""Upbit's quotation REST API over the simulated history: parameters in, Upbit JSON shapes out.

This module serves markets, candles and trades (``_rest_quotes``: tickers and orderbooks).
Each handler takes the request and the simulator state and returns the JSON array to send,
its rows written by ``_upbit.rest_rows`` (the writer ``serve`` uses too);
it raises ``InvalidRequestError`` (→ 400) or ``UnknownMarketError`` (→ 404 ``Code not
found``) with Upbit's verbatim messages. Faults, rate limits and headers are the app's job
(``_app.py``). Behaviour follows ``shared/upbit/API.md`` §1–§4; where Upbit's behaviour is
unknown, the choice is stated next to the code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from starlette.requests import Request

from .._base.time import DAY_MS
from .._base.timeframes import MINUTE_UNITS, REST_CANDLE_KINDS, Timeframe
from .._upbit.horizon import SECONDS_HORIZON_MS
from .._upbit.limits import MAX_CANDLES, MAX_TRADES, TRADES_KEPT_DAYS
from .._upbit.params import cursor_value, days_ago_value, time_of_day_ms
from .._upbit.rest_rows import candle_row, market_row, trade_row
from .._upbit.texts import BAD_UNIT, WRONG_VALUE
from ..errors import InvalidRequestError
from ..records import MarketInfo, Side
from ..records import Trade as TradeRecord
from ._rest_params import (
    Handler,
    Json,
    count_param,
    is_true,
    listed_market,
    param,
    parse_to,
    required,
    round8,
)

if TYPE_CHECKING:
    from ._history import Bar, Trade
    from ._state import SimState
    from ._universe import SimMarket

__all__ = ["candles", "market_all", "trades_ticks"]


# -- /v1/market/all -------------------------------------------------------------------------


def market_all(request: Request, sim: SimState) -> Json:
    """Listed markets; with ``is_details`` (or legacy ``isDetails``) the warning fields:
    ``market_event`` on region kr, ``market_warning`` on the other regions."""
    details = is_true(param(request.query_params, "is_details", "isDetails"))
    now_ms = sim.now_ms()
    korea = sim.config.region == "kr"
    return [
        market_row(
            MarketInfo(
                market.code, market.korean_name, market.english_name, market.warning, market.caution
            ),
            details=details,
            korea=korea,
        )
        for market in sim.history.markets
        if sim.is_listed(market, now_ms)
    ]


# -- /v1/candles/* --------------------------------------------------------------------------


def _timeframe(request: Request, kind: str) -> Timeframe:
    timeframe = REST_CANDLE_KINDS.get(kind)
    if timeframe is not None:
        return timeframe
    unit = request.path_params.get("unit", "")  # minutes: the unit comes from the path
    try:
        return MINUTE_UNITS[int(unit)]
    except (ValueError, KeyError):
        raise InvalidRequestError(BAD_UNIT) from None


def candles(kind: str) -> Handler:
    """The handler of ``/v1/candles/<kind>`` (``minutes`` takes its unit from the path)."""

    def handler(request: Request, sim: SimState) -> Json:
        params = request.query_params
        timeframe = _timeframe(request, kind)
        code = required(params, "market")
        now_ms = sim.now_ms()
        market = listed_market(sim, code, now_ms)
        count = count_param(params, MAX_CANDLES)
        to = params.get("to")
        # The forming window may start exactly at now, so "now" as a bound is now + 1 ms.
        before_ms = now_ms + 1 if to is None else min(parse_to(to), now_ms + 1)
        convert = param(params, "converting_price_unit", "convertingPriceUnit")
        if convert is not None and (kind != "days" or convert != "KRW"):
            raise InvalidRequestError(WRONG_VALUE)
        oldest_ms = now_ms - SECONDS_HORIZON_MS if kind == "seconds" else None
        if oldest_ms is not None and before_ms <= oldest_ms:
            return []
        bars = sim.history.candles(
            market.code, timeframe, before_ms=before_ms, now_ms=now_ms, count=count
        )
        if oldest_ms is not None:
            bars = [bar for bar in bars if bar.start_ms >= oldest_ms]
        return [_candle(sim, market, timeframe, bar, convert is not None) for bar in bars]

    return handler


def _candle(
    sim: SimState, market: SimMarket, timeframe: Timeframe, bar: Bar, convert: bool
) -> dict[str, Any]:
    prev = converted = None
    if timeframe.unit == "day":
        # None on the listing day: Upbit compares with the listing price (the day's open).
        prev = sim.history.prev_close(market.code, bar.start_ms)
        if convert:
            converted = _to_krw(sim, market, bar)
    return candle_row(
        market.code,
        timeframe,
        bar.start_ms,
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.last_ms,
        bar.value,
        bar.volume,
        prev,
        converted,
    )


def _to_krw(sim: SimState, market: SimMarket, bar: Bar) -> float:
    """The close in KRW: through the KRW market of the quote currency at the bar's last trade."""
    if market.quote == "KRW":
        return bar.close
    rate_market = sim.history.market(f"KRW-{market.quote}")
    if rate_market is None:
        return bar.close
    rate = sim.history.last_trade(rate_market.code, bar.last_ms)
    return bar.close if rate is None else round(bar.close * rate.price, 8)


# -- /v1/trades/ticks -----------------------------------------------------------------------


def trades_ticks(request: Request, sim: SimState) -> Json:
    """Recent trades, newest first. ``days_ago`` (1..7) picks a past UTC day and ``to`` a time
    within the selected day (both keep the answer inside that day); ``cursor`` (a
    ``sequential_id``) continues before that trade. Nothing older than 7 days is served."""
    params = request.query_params
    code = required(params, "market")
    now_ms = sim.now_ms()
    market = listed_market(sim, code, now_ms)
    count = count_param(params, MAX_TRADES)
    today_ms = now_ms // DAY_MS * DAY_MS
    days_text = param(params, "days_ago", "daysAgo")
    to = params.get("to")
    cursor = params.get("cursor")
    days_ago = 0 if days_text is None else days_ago_value(days_text)
    day_ms = today_ms - days_ago * DAY_MS
    before_ms = day_ms + DAY_MS if to is None else day_ms + time_of_day_ms(to)
    before_ms = min(before_ms, now_ms + 1)
    oldest_ms = day_ms if (days_text is not None or to is not None) else None
    if oldest_ms is None:
        oldest_ms = today_ms - TRADES_KEPT_DAYS * DAY_MS
    if cursor is not None:
        seq = cursor_value(cursor)  # a sequential_id or 400: never an absurd one
        # A trade's sequential_id is its ms * 10_000 + its index: no kept trade lies past
        # ``before_ms``, so a cursor from the future (or beyond int64) starts there instead
        # of walking (and generating) every empty day in between.
        seq = min(seq, before_ms * 10_000)
        found = sim.history.trades_before_seq(market.code, seq, count)
        trades = [t for t in found if t.ms < before_ms]
    else:
        trades = sim.history.trades(market.code, before_ms=before_ms, count=count)
    prev_by_day: dict[int, float] = {}
    rows: Json = []
    for trade in trades:
        if trade.ms < oldest_ms:
            break
        rows.append(_tick(sim, market, trade, prev_by_day))
    return rows


def _tick(
    sim: SimState, market: SimMarket, trade: Trade, prev_by_day: dict[int, float]
) -> dict[str, Any]:
    day = trade.ms // DAY_MS * DAY_MS
    prev = prev_by_day.get(day)
    if prev is None:
        prev = sim.history.prev_close(market.code, trade.ms)
        if prev is None:  # the listing day: compare with the day's first trade
            first = sim.history.aggregate(market.code, day, day + DAY_MS)
            prev = trade.price if first is None else first.open
        prev_by_day[day] = prev
    record = TradeRecord(
        market.code,
        trade.ms,
        trade.price,
        trade.volume,
        cast(Side, trade.side),
        trade.seq,
        prev,
        round8(trade.price - prev),
    )
    return trade_row(record)
