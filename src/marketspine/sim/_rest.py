"""Upbit's quotation REST API over the simulated history: parameters in, Upbit JSON shapes out.

Each handler takes the request and the simulator state and returns the JSON array to send;
it raises ``InvalidRequestError`` (→ 400) or ``UnknownMarketError`` (→ 404 ``Code not
found``) with Upbit's verbatim messages. Faults, rate limits and headers are the app's job
(``_app.py``). Behaviour follows ``shared/upbit/API.md`` §1–§4; where Upbit's behaviour is
unknown, the choice is stated next to the code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams
from starlette.requests import Request

from .._errors import InvalidRequestError, UnknownMarketError
from .._ticks import tick_decimals, tick_size
from .._time import DAY_MS, KST_OFFSET_MS, format_utc, parse_time
from .._timeframes import TIMEFRAMES, Timeframe
from ._levels import aggregate_levels, is_supported_level, supported_levels

if TYPE_CHECKING:
    from ._history import Bar, Trade
    from ._state import SimState
    from ._universe import SimMarket

__all__ = [
    "CANDLE_KINDS",
    "CAUTION_KEYS",
    "MISSING",
    "NOT_FOUND",
    "TYPE_MISMATCH",
    "WRONG_VALUE",
    "Handler",
    "candles",
    "market_all",
    "orderbook",
    "orderbook_instruments",
    "orderbook_supported_levels",
    "ticker",
    "ticker_all",
    "trades_ticks",
]

Json = list[dict[str, Any]]
Handler = Callable[[Request, "SimState"], Json]

# Upbit's messages, verbatim (API.md §4).
MISSING = "Missing request parameter error. Check the required parameters!"
TYPE_MISMATCH = "Type mismatch error. Check the parameters type!"
WRONG_VALUE = "Invalid parameter. Check the given value!"
NOT_FOUND = "Code not found"
BAD_UNIT = "specified unit is not valid."

CAUTION_KEYS = (
    "PRICE_FLUCTUATIONS",
    "TRADING_VOLUME_SOARING",
    "DEPOSIT_AMOUNT_SOARING",
    "GLOBAL_PRICE_DIFFERENCES",
    "CONCENTRATION_OF_SMALL_ACCOUNTS",
)
MAX_CANDLES = 200
MAX_TRADES = 500
MAX_BOOK_LEVELS = 30
SECONDS_KEPT_MS = 90 * DAY_MS  # seconds candles: only ~3 months back (API.md §1.2)
TRADES_KEPT_DAYS = 7  # trades/ticks: days_ago 1..7
_MINUTE_FRAMES = {tf.minutes: tf for tf in TIMEFRAMES.values() if tf.unit == "minute"}
CANDLE_KINDS: dict[str, Timeframe | None] = {
    "seconds": TIMEFRAMES["1s"],
    "minutes": None,  # the unit comes from the path
    "days": TIMEFRAMES["1d"],
    "weeks": TIMEFRAMES["1w"],
    "months": TIMEFRAMES["1M"],
    "years": TIMEFRAMES["1y"],
}


# -- parameters ---------------------------------------------------------------------------


def _param(params: QueryParams, *names: str) -> str | None:
    for name in names:
        value = params.get(name)
        if value is not None:
            return value
    return None


def _required(params: QueryParams, *names: str) -> str:
    value = _param(params, *names)
    if value is None or value == "":
        raise InvalidRequestError(MISSING)
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidRequestError(TYPE_MISMATCH) from None


def _count(params: QueryParams, maximum: int) -> int:
    """``count``: default 1; above ``maximum`` clamps (Upbit answers 200); below 1 is our
    choice of 400, as Upbit's answer is not documented."""
    text = params.get("count")
    if text is None:
        return 1
    count = _int(text)
    if count < 1:
        raise InvalidRequestError(WRONG_VALUE)
    return min(count, maximum)


def _codes(params: QueryParams) -> list[str]:
    """``markets`` as a comma list, or as repeated keys (pyupbit sends lists that way)."""
    codes: list[str] = []
    for value in params.getlist("markets"):
        for code in value.split(","):
            code = code.strip().upper()
            if code and code not in codes:
                codes.append(code)
    if not codes:
        raise InvalidRequestError(MISSING)
    return codes


def _market(sim: SimState, code: str, now_ms: int) -> SimMarket:
    """The listed market ``code`` (any case); a market listed after now does not exist yet,
    and a delisted one no longer does (Upbit answers both with 404 "Code not found")."""
    market = sim.history.market(code.upper())
    if market is None or not sim.is_listed(market, now_ms):
        raise UnknownMarketError(code, NOT_FOUND)
    return market


def _parse_to(text: str) -> int:
    """Candle ``to``: ISO 8601, naive = UTC, ``T`` or space, ``Z`` or an offset, fractions.
    An unencoded ``+`` arrives as a space before the offset and fails here, as on Upbit."""
    try:
        return parse_time(text)
    except InvalidRequestError:
        raise InvalidRequestError(WRONG_VALUE) from None


@functools.lru_cache(maxsize=4096)
def _date_text(day: int) -> str:
    return format_utc(day * DAY_MS)[:10]


_HOUR_MINUTE = tuple(f"T{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
_SECOND = tuple(f"{s:02d}" for s in range(60))


def _stamp(ms: int) -> str:
    """``format_utc(ms)`` (``yyyy-MM-ddTHH:mm:ss``) from lookup tables: a 200-candle page
    needs 400 of these, and strftime was most of the page's cost."""
    day, rest = divmod(ms, DAY_MS)
    minute, second = divmod(rest // 1000, 60)
    return _date_text(day) + _HOUR_MINUTE[minute] + _SECOND[second]


def _is_true(text: str | None) -> bool:
    return text is not None and text.strip().lower() == "true"


def _round(value: float) -> float:
    """Prices and sizes carry at most 8 decimals on Upbit; this removes float noise."""
    return round(value, 8)


def _number(value: float) -> int | float:
    """A whole number as a JSON integer (orderbook levels, zero slots), otherwise a float."""
    return int(value) if float(value).is_integer() else value


# -- /v1/market/all -------------------------------------------------------------------------


def market_all(request: Request, sim: SimState) -> Json:
    """Listed markets; with ``is_details`` (or legacy ``isDetails``) the warning fields:
    ``market_event`` on region kr, ``market_warning`` on the other regions."""
    details = _is_true(_param(request.query_params, "is_details", "isDetails"))
    now_ms = sim.now_ms()
    korea = sim.config.region == "kr"
    rows: Json = []
    for market in sim.history.markets:
        if not sim.is_listed(market, now_ms):
            continue
        row: dict[str, Any] = {"market": market.code}
        if market.korean_name is not None:
            row["korean_name"] = market.korean_name
        row["english_name"] = market.english_name
        if details and korea:
            row["market_event"] = {
                "warning": market.warning,
                "caution": {key: bool(market.caution.get(key, False)) for key in CAUTION_KEYS},
            }
        elif details:
            row["market_warning"] = "CAUTION" if market.warning else "NONE"
        rows.append(row)
    return rows


# -- /v1/candles/* --------------------------------------------------------------------------


def _timeframe(request: Request, kind: str) -> Timeframe:
    timeframe = CANDLE_KINDS[kind]
    if timeframe is not None:
        return timeframe
    unit = request.path_params.get("unit", "")
    try:
        return _MINUTE_FRAMES[int(unit)]
    except (ValueError, KeyError):
        raise InvalidRequestError(BAD_UNIT) from None


def candles(kind: str) -> Handler:
    """The handler of ``/v1/candles/<kind>`` (``minutes`` takes its unit from the path)."""

    def handler(request: Request, sim: SimState) -> Json:
        params = request.query_params
        timeframe = _timeframe(request, kind)
        code = _required(params, "market")
        now_ms = sim.now_ms()
        market = _market(sim, code, now_ms)
        count = _count(params, MAX_CANDLES)
        to = params.get("to")
        # The forming window may start exactly at now, so "now" as a bound is now + 1 ms.
        before_ms = now_ms + 1 if to is None else min(_parse_to(to), now_ms + 1)
        convert = _param(params, "converting_price_unit", "convertingPriceUnit")
        if convert is not None and (kind != "days" or convert != "KRW"):
            raise InvalidRequestError(WRONG_VALUE)
        oldest_ms = now_ms - SECONDS_KEPT_MS if kind == "seconds" else None
        if oldest_ms is not None and before_ms <= oldest_ms:
            return []
        bars = sim.history.candles(
            market.code, timeframe, before_ms=before_ms, now_ms=now_ms, count=count
        )
        if oldest_ms is not None:
            bars = [bar for bar in bars if bar.start_ms >= oldest_ms]
        return [_candle(sim, market, kind, timeframe, bar, convert is not None) for bar in bars]

    return handler


def _candle(
    sim: SimState, market: SimMarket, kind: str, timeframe: Timeframe, bar: Bar, convert: bool
) -> dict[str, Any]:
    utc = _stamp(bar.start_ms)
    row: dict[str, Any] = {
        "market": market.code,
        "candle_date_time_utc": utc,
        "candle_date_time_kst": _stamp(bar.start_ms + KST_OFFSET_MS),
        "opening_price": bar.open,
        "high_price": bar.high,
        "low_price": bar.low,
        "trade_price": bar.close,
        "timestamp": bar.last_ms,
        "candle_acc_trade_price": bar.value,
        "candle_acc_trade_volume": bar.volume,
    }
    if kind == "minutes":
        row["unit"] = timeframe.minutes
    elif kind == "days":
        prev = sim.history.prev_close(market.code, bar.start_ms)
        if prev is None:  # the listing day: Upbit compares with the listing price
            prev = bar.open
        change = _round(bar.close - prev)
        row["prev_closing_price"] = prev
        row["change_price"] = change
        row["change_rate"] = round(change / prev, 10) if prev else 0.0
        if convert:
            row["converted_trade_price"] = _to_krw(sim, market, bar)
    elif kind != "seconds":
        row["first_day_of_period"] = utc[:10]
    return row


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


def _time_of_day_ms(text: str) -> int:
    """``HHmmss`` or ``HH:mm:ss`` → ms after 00:00 UTC."""
    digits = text.replace(":", "") if len(text) == 8 else text
    if len(digits) != 6 or not digits.isdigit():
        raise InvalidRequestError(WRONG_VALUE)
    hours, minutes, seconds = int(digits[:2]), int(digits[2:4]), int(digits[4:])
    if hours > 23 or minutes > 59 or seconds > 59:
        raise InvalidRequestError(WRONG_VALUE)
    return ((hours * 60 + minutes) * 60 + seconds) * 1000


def trades_ticks(request: Request, sim: SimState) -> Json:
    """Recent trades, newest first. ``days_ago`` (1..7) picks a past UTC day and ``to`` a time
    within the selected day (both keep the answer inside that day); ``cursor`` (a
    ``sequential_id``) continues before that trade. Nothing older than 7 days is served."""
    params = request.query_params
    code = _required(params, "market")
    now_ms = sim.now_ms()
    market = _market(sim, code, now_ms)
    count = _count(params, MAX_TRADES)
    today_ms = now_ms // DAY_MS * DAY_MS
    days_text = _param(params, "days_ago", "daysAgo")
    to = params.get("to")
    cursor = params.get("cursor")
    days_ago = 0 if days_text is None else _int(days_text)
    if days_text is not None and not 1 <= days_ago <= TRADES_KEPT_DAYS:
        raise InvalidRequestError(WRONG_VALUE)
    day_ms = today_ms - days_ago * DAY_MS
    before_ms = day_ms + DAY_MS if to is None else day_ms + _time_of_day_ms(to)
    before_ms = min(before_ms, now_ms + 1)
    oldest_ms = day_ms if (days_text is not None or to is not None) else None
    if oldest_ms is None:
        oldest_ms = today_ms - TRADES_KEPT_DAYS * DAY_MS
    if cursor is not None:
        try:
            seq = int(cursor)
        except ValueError:
            raise InvalidRequestError(WRONG_VALUE) from None
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
    stamp = _stamp(trade.ms)
    return {
        "market": market.code,
        "trade_date_utc": stamp[:10],
        "trade_time_utc": stamp[11:],
        "timestamp": trade.ms,
        "trade_price": trade.price,
        "trade_volume": trade.volume,
        "prev_closing_price": prev,
        "change_price": _round(trade.price - prev),
        "ask_bid": trade.side,
        "sequential_id": trade.seq,
    }


# -- /v1/ticker, /v1/ticker/all ---------------------------------------------------------------


def ticker(request: Request, sim: SimState) -> Json:
    """Tickers of the ``markets`` (comma list or repeated keys); any unknown code → 404."""
    now_ms = sim.now_ms()
    markets = [_market(sim, code, now_ms) for code in _codes(request.query_params)]
    return _tickers(sim, markets, now_ms)


def ticker_all(request: Request, sim: SimState) -> Json:
    """Tickers of every listed market of the ``quote_currencies`` (legacy ``quoteCurrencies``).
    An unknown quote currency is our choice of 404 ``Code not found``."""
    text = _required(request.query_params, "quote_currencies", "quoteCurrencies")
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
        utc = _stamp(last.ms)
        kst = _stamp(last.ms + KST_OFFSET_MS)
        prev = state.prev_close
        signed = _round(last.price - prev)
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
    markets = [_market(sim, code, now_ms) for code in _codes(params)]
    count_text = params.get("count")
    depth = MAX_BOOK_LEVELS if count_text is None else _int(count_text)
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
        "total_ask_size": _round(sum(size for _, size in asks)),
        "total_bid_size": _round(sum(size for _, size in bids)),
        "orderbook_units": units,
    }
    if sim.config.region == "kr":
        row["level"] = _number(level)
    return row


def orderbook_instruments(request: Request, sim: SimState) -> Json:
    """Tick size (a string) and supported levels (strings) of each of ``markets``."""
    now_ms = sim.now_ms()
    rows: Json = []
    for code in _codes(request.query_params):
        market = _market(sim, code, now_ms)
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
            "supported_levels": [_number(x) for x in _levels(sim, market, now_ms)],
        }
        for market in sim.history.markets
        if sim.is_listed(market, now_ms)
    ]
