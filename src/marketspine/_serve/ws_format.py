"""What ``serve``'s ``/websocket/v1`` says to its clients, as plain data (no I/O).

Requests parse exactly as the simulator parses them (one parser, ``_upbit.ws_format``); a
client's subscription becomes ``ClientStream`` rows; records from the shared upstream feed
(Ticker, Trade, Orderbook, Candle) render into Upbit's DEFAULT or SIMPLE key set.

Records from Upbit's WebSocket carry its WebSocket-only fields (a ticker's ``ask_bid``,
``acc_ask_volume``/``acc_bid_volume``, ``market_state``, ``delisting_date``; a trade's
``best_*``), and those render as received. A record from REST lacks them (None): they are
rendered from what the gateway knows (``Extras``: the side of the market's last trade, its
best quotes from the last book) and are ``null`` when nothing is known (a REST ticker's
``acc_ask_volume``/``acc_bid_volume`` always); ``market_state`` is then ``ACTIVE``.
``market_warning`` comes from the market list, ``is_trading_suspended`` is always false
(deprecated upstream), and a trade's ``timestamp`` (when Upbit sent it) is its trade time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from .._base.markets import is_market_code
from .._base.time import DAY_MS, KST_OFFSET_MS, format_utc, from_ms
from .._base.timeframes import TIMEFRAMES
from .._upbit.limits import MAX_BOOK_LEVELS
from .._upbit.ws_format import KEYS, SubscribeRequest, split_code
from ..records import Candle, Orderbook, OrderbookUnit, Ticker, Trade

__all__ = [
    "CANDLE_KINDS",
    "ClientStream",
    "Extras",
    "Record",
    "aggregate_book",
    "at_supported_levels",
    "client_streams",
    "kind_of",
    "listing",
    "render",
    "repeats",
    "timeframe_of",
]

Record = Ticker | Trade | Orderbook | Candle

# Timeframe name -> WebSocket candle type ("1h" -> "candle.60m"), and back.
CANDLE_KINDS = {tf.name: tf.ws_type for tf in TIMEFRAMES.values() if tf.ws_type is not None}
_TIMEFRAME_OF_KIND = {kind: name for name, kind in CANDLE_KINDS.items()}
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ClientStream:
    """One subscribed type of one client: market -> orderbook depth (0 for other types),
    the codes as the client wrote them (for LIST_SUBSCRIPTIONS), the snapshot/realtime
    flags and the orderbook aggregation level (0 = native tick)."""

    kind: str
    codes: dict[str, int]
    listed: tuple[str, ...]
    snapshot: bool
    realtime: bool
    level: float


@dataclass(frozen=True, slots=True)
class Extras:
    """Wire fields no record carries, as far as the gateway knows them."""

    warning: bool = False
    last_side: str | None = None
    best_ask: tuple[float, float] | None = None
    best_bid: tuple[float, float] | None = None


def kind_of(record: Record) -> str:
    """The WebSocket type a record streams as (``ticker``, ``trade``, ``orderbook``,
    ``candle.1m`` ...)."""
    if isinstance(record, Ticker):
        return "ticker"
    if isinstance(record, Trade):
        return "trade"
    if isinstance(record, Orderbook):
        return "orderbook"
    return CANDLE_KINDS.get(record.timeframe, f"candle.{record.timeframe}")


def repeats(record: Record, last: Record) -> Record | None:
    """The record to keep as the pair's last if ``record`` tells a client nothing that
    ``last`` (the pair's previous event) did not, else None. A repeat is the same record
    again (upstream re-sends its snapshots when the subscription changes), the same trade
    (``seq``: records compare every field, and a REST trade lacks the WebSocket-only ones)
    or the WebSocket copy of ``last``, a REST ticker; the copy with the WebSocket-only
    fields is the one kept."""
    if isinstance(record, Trade) and isinstance(last, Trade):
        if record.seq != last.seq or record.market != last.market:
            return None
        return last if record.best_ask_price is None else record
    if isinstance(record, Ticker) and isinstance(last, Ticker) and last.market_state is None:
        alike = msgspec.structs.replace(record, **_NO_WS_ONLY) == last
        return record if alike else None
    return record if record == last else None


# The ticker fields only the WebSocket sends, as a REST ticker has them.
_NO_WS_ONLY: dict[str, Any] = dict.fromkeys(
    ("side", "acc_ask_volume", "acc_bid_volume", "market_state", "delisting_date")
)


def timeframe_of(kind: str) -> str:
    """The timeframe name of a candle type (``candle.60m`` -> ``1h``)."""
    return _TIMEFRAME_OF_KIND[kind]


def client_streams(
    request: SubscribeRequest, known: Callable[[str], bool]
) -> dict[str, ClientStream]:
    """The subscription ``request`` asks for, by type. As on Upbit, codes that are not
    upper-case listed markets (``known``) are dropped silently; a type named twice keeps
    its later object; an orderbook code's ``.n`` suffix picks its depth."""
    streams: dict[str, ClientStream] = {}
    for item in request.streams:
        codes: dict[str, int] = {}
        listed: list[str] = []
        for raw in item.codes:
            market, depth = split_code(raw) if item.type == "orderbook" else (raw, 0)
            if not is_market_code(market) or not known(market):
                continue
            codes[market] = depth
            listed.append(raw)
        streams[item.type] = ClientStream(
            item.type,
            codes,
            tuple(listed),
            snapshot=not item.only_realtime,
            realtime=not item.only_snapshot,
            level=item.level or 0.0,
        )
    return streams


def at_supported_levels(
    streams: dict[str, ClientStream], levels: Mapping[str, Sequence[float]]
) -> dict[str, ClientStream]:
    """``streams`` without the orderbook codes whose market does not support the stream's
    ``level`` (Upbit sends nothing at all for them); markets missing from ``levels``
    (market -> supported levels) are kept."""
    stream = streams.get("orderbook")
    if stream is None or not stream.level:
        return streams

    def supported(market: str) -> bool:
        known = levels.get(market)
        return known is None or any(math.isclose(stream.level, x, abs_tol=1e-12) for x in known)

    codes = {market: depth for market, depth in stream.codes.items() if supported(market)}
    listed = tuple(raw for raw in stream.listed if split_code(raw)[0] in codes)
    return {**streams, "orderbook": replace(stream, codes=codes, listed=listed)}


def listing(streams: dict[str, ClientStream]) -> list[tuple[str, list[str], float | None]]:
    """(type, codes, level) rows for LIST_SUBSCRIPTIONS; level only on orderbook."""
    return [
        (s.kind, list(s.listed), _whole(s.level) if s.kind == "orderbook" else None)
        for s in streams.values()
        if s.listed
    ]


def render(
    record: Record,
    *,
    simple: bool,
    stream_type: str,
    depth: int = MAX_BOOK_LEVELS,
    level: float = 0.0,
    extras: Extras = Extras(),
) -> bytes:
    """One message as a JSON object in DEFAULT (``simple`` False) or SIMPLE keys.
    ``depth`` and ``level`` apply to orderbooks: the book is aggregated to ``level``-wide
    price buckets when ``level`` is not 0, then cut (or zero-padded) to ``depth`` units."""
    if isinstance(record, Ticker):
        values: tuple[Any, ...] = _ticker_values(record, extras)
        table = "ticker"
    elif isinstance(record, Trade):
        values = _trade_values(record, extras)
        table = "trade"
    elif isinstance(record, Orderbook):
        return _encoder.encode(_book(record, simple, stream_type, depth, level))
    else:
        values = _candle_values(record)
        table = "candle"
    return _encoder.encode(dict(zip(KEYS[table][simple], (*values, stream_type), strict=True)))


@functools.lru_cache(maxsize=1024)
def _day_texts(day: int) -> tuple[str, str]:
    """UTC day ``day`` (days since the epoch) as ``yyyy-MM-dd`` and ``yyyyMMdd``."""
    text = from_ms(day * DAY_MS).strftime("%Y-%m-%d")
    return text, text.replace("-", "")


def _day_and_time(ms: int) -> tuple[tuple[str, str], int, int, int]:
    """The day texts of ``ms`` and its hour, minute and second (UTC): two strftime calls a
    frame cost more than the rest of a trade's rendering."""
    day, in_day = divmod(ms, DAY_MS)
    seconds = in_day // 1000
    return _day_texts(day), seconds // 3600, seconds // 60 % 60, seconds % 60


def _ticker_values(t: Ticker, extras: Extras) -> tuple[Any, ...]:
    (_, day), hour, minute, second = _day_and_time(t.trade_ms)
    return (
        "ticker",
        t.market,
        t.open,
        t.high,
        t.low,
        t.price,
        t.prev_close,
        t.acc_value,
        t.change,
        abs(t.change_price),
        t.change_price,
        abs(t.change_rate),
        t.change_rate,
        t.side or extras.last_side,
        t.trade_volume,
        t.acc_volume,
        day,
        f"{hour:02d}{minute:02d}{second:02d}",
        t.trade_ms,
        t.acc_ask_volume,  # None from REST: Upbit's REST ticker has no such field
        t.acc_bid_volume,
        t.high_52w,
        t.high_52w_date,
        t.low_52w,
        t.low_52w_date,
        t.market_state or "ACTIVE",  # a REST ticker is of a listed market
        False,
        t.delisting_date,
        "CAUTION" if extras.warning else "NONE",
        t.ms,
        t.acc_value_24h,
        t.acc_volume_24h,
    )


def _trade_values(t: Trade, extras: Extras) -> tuple[Any, ...]:
    (day, _), hour, minute, second = _day_and_time(t.ms)
    change = "RISE" if t.change_price > 0 else "FALL" if t.change_price < 0 else "EVEN"
    # A WebSocket trade carries the quotes at the trade; a REST one gets the last book's.
    ask = _quote(t.best_ask_price, t.best_ask_size, extras.best_ask)
    bid = _quote(t.best_bid_price, t.best_bid_size, extras.best_bid)
    return (
        "trade",
        t.market,
        t.ms,
        day,
        f"{hour:02d}:{minute:02d}:{second:02d}",
        t.ms,
        t.price,
        t.volume,
        t.side,
        t.prev_close,
        change,
        abs(t.change_price),  # unsigned on the WebSocket, signed in the record
        t.seq,
        ask[0],
        ask[1],
        bid[0],
        bid[1],
    )


def _quote(
    price: float | None, size: float | None, known: tuple[float, float] | None
) -> tuple[float | None, float | None]:
    if price is not None:
        return price, size
    return known or (None, None)


def _candle_values(c: Candle) -> tuple[Any, ...]:
    return (
        kind_of(c),
        c.market,
        format_utc(c.start_ms),
        format_utc(c.start_ms + KST_OFFSET_MS),
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.value,
        c.last_trade_ms,
    )


def _book(
    book: Orderbook, simple: bool, stream_type: str, depth: int, level: float
) -> dict[str, Any]:
    units: Sequence[OrderbookUnit] = book.units
    if level and not book.level:
        units = aggregate_book(units, level)
    unit_keys = KEYS["unit"][simple]
    rows = []
    total_ask = total_bid = 0.0
    for i in range(depth):
        u = units[i] if i < len(units) else OrderbookUnit(0, 0, 0, 0)
        total_ask += u.ask_size
        total_bid += u.bid_size
        rows.append(
            dict(zip(unit_keys, (u.ask_price, u.bid_price, u.ask_size, u.bid_size), strict=True))
        )
    if depth >= len(units) and not level:
        total_ask, total_bid = book.total_ask_size, book.total_bid_size
    values = (
        "orderbook",
        book.market,
        book.ms,
        round(total_ask, 8),
        round(total_bid, 8),
        rows,
        stream_type,
        _whole(level or book.level),
    )
    return dict(zip(KEYS["orderbook"][simple], values, strict=True))


def aggregate_book(units: Sequence[OrderbookUnit], level: float) -> list[OrderbookUnit]:
    """Group a native book into ``level``-wide price buckets, as Upbit's "모아보기": asks
    round up, bids round down (a bucket never shows a better price than any order in it);
    sizes are summed. Built from the levels at hand, so it holds fewer units than a book
    Upbit aggregates from its whole depth."""
    asks = _buckets([(u.ask_price, u.ask_size) for u in units if u.ask_price], level, math.ceil)
    bids = _buckets([(u.bid_price, u.bid_size) for u in units if u.bid_price], level, math.floor)
    out = []
    for i in range(max(len(asks), len(bids))):
        ask = asks[i] if i < len(asks) else (0.0, 0.0)
        bid = bids[i] if i < len(bids) else (0.0, 0.0)
        out.append(OrderbookUnit(ask[0], ask[1], bid[0], bid[1]))
    return out


def _buckets(
    side: list[tuple[float, float]], level: float, to_grid: Callable[[float], int]
) -> list[tuple[float, float]]:
    merged: dict[float, float] = {}
    for price, size in side:
        bucket = float(f"{to_grid(round(price / level, 9)) * level:.10g}")
        merged[bucket] = merged.get(bucket, 0.0) + size
    return [(_whole(price), round(size, 8)) for price, size in merged.items()]


def _whole(value: float) -> float:
    # A whole number goes out as a JSON integer (116539000, not 116539000.0), as on Upbit.
    return int(value) if float(value).is_integer() else value
