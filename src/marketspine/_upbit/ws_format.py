"""Upbit WebSocket messages, both ways, as plain data (no I/O); see API.md §5.

Requests are JSON arrays ``[{ticket}, {type, codes, ...}, ..., {format}]``; they parse into
``SubscribeRequest`` or ``ListRequest`` or raise ``WsRequestError`` carrying Upbit's error
name. Server messages are built straight into the key set of the connection's format
(DEFAULT or SIMPLE keys) and encoded as UTF-8 JSON; the LIST formats wrap them in arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .._base.time import KST_OFFSET_MS, format_utc, from_ms
from .._base.timeframes import WS_CANDLE_TYPES, Timeframe
from ..errors import InvalidRequestError
from .levels import clean_float, whole
from .limits import MAX_BOOK_LEVELS
from .texts import WS_ERROR_TEXTS

__all__ = [
    "FORMATS",
    "KEYS",
    "ORDERBOOK_DEPTHS",
    "STATUS_UP",
    "STREAM_TYPES",
    "ListRequest",
    "StreamRequest",
    "SubscribeRequest",
    "WsRequestError",
    "candle_message",
    "encode",
    "error_message",
    "is_simple",
    "list_message",
    "orderbook_message",
    "parse_request",
    "split_code",
    "ticker_message",
    "trade_message",
]

FORMATS = ("DEFAULT", "SIMPLE", "JSON_LIST", "SIMPLE_LIST")
ORDERBOOK_DEPTHS = (1, 5, 15, MAX_BOOK_LEVELS)

# Stream type -> the candle timeframe it carries (None for ticker, trade, orderbook).
STREAM_TYPES: dict[str, Timeframe | None] = {
    "ticker": None,
    "trade": None,
    "orderbook": None,
    **WS_CANDLE_TYPES,
}


class WsRequestError(InvalidRequestError):
    """A WebSocket request Upbit would refuse; ``name`` is Upbit's error name
    (WRONG_FORMAT, NO_TICKET, NO_TYPE, NO_CODES, INVALID_PARAM, TOO_MANY_REQUESTS)."""

    def __init__(self, name: str, message: str | None = None) -> None:
        self.name = name
        super().__init__(message or WS_ERROR_TEXTS[name])


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """One ``{"type": ..., "codes": [...]}`` object of a request. ``codes`` are kept as sent
    (an orderbook code may carry a ``.n`` depth suffix); ``level`` is None when not given."""

    type: str
    codes: tuple[str, ...]
    only_snapshot: bool = False
    only_realtime: bool = False
    level: float | None = None


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    ticket: str
    streams: tuple[StreamRequest, ...]
    format: str | None  # None: the request named no format (DEFAULT applies)


@dataclass(frozen=True, slots=True)
class ListRequest:
    """``[{"ticket": ...}, {"method": "LIST_SUBSCRIPTIONS"}]``; a format here switches the
    connection's format too."""

    ticket: str
    format: str | None


_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def parse_request(data: str | bytes) -> SubscribeRequest | ListRequest:
    """Parse one client request message.

    Returns a SubscribeRequest or ListRequest. Raises WsRequestError: WRONG_FORMAT for
    anything but a JSON array of objects (or malformed fields), NO_TICKET, NO_TYPE, NO_CODES,
    and INVALID_PARAM for empty codes or an unknown type, format or method.
    """
    try:
        items = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # RecursionError: a deeply nested array ("[[[[…") is malformed input too.
        raise WsRequestError("WRONG_FORMAT") from None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise WsRequestError("WRONG_FORMAT")
    ticket: str | None = None
    fmt: str | None = None
    method: str | None = None
    type_objects: list[dict[str, Any]] = []
    for item in items:
        if "ticket" in item:
            ticket = item["ticket"]
        if "format" in item:
            fmt = item["format"]
        if "method" in item:
            method = item["method"]
        if "type" in item or "codes" in item or not item.keys() & {"ticket", "format", "method"}:
            type_objects.append(item)
    if not isinstance(ticket, str) or not ticket.strip():
        raise WsRequestError("NO_TICKET")
    if fmt is not None:
        if not isinstance(fmt, str):
            raise WsRequestError("WRONG_FORMAT")
        if fmt not in FORMATS:
            raise WsRequestError("INVALID_PARAM", f"{fmt} 은 지원하지 않는 포맷입니다.")
    if method is not None:
        if method != "LIST_SUBSCRIPTIONS":
            raise WsRequestError("INVALID_PARAM", f"{method} 은 지원하지 않는 메서드입니다.")
        return ListRequest(ticket, fmt)
    if not type_objects:
        raise WsRequestError("NO_TYPE")
    return SubscribeRequest(ticket, tuple(_parse_stream(obj) for obj in type_objects), fmt)


def _parse_stream(obj: dict[str, Any]) -> StreamRequest:
    kind = obj.get("type")
    if kind is None:
        raise WsRequestError("NO_TYPE")
    if not isinstance(kind, str):
        raise WsRequestError("WRONG_FORMAT")
    if kind not in STREAM_TYPES:
        raise WsRequestError("INVALID_PARAM", f"{kind} 은 지원하지 않는 타입입니다.")
    if "codes" not in obj or obj["codes"] is None:
        raise WsRequestError("NO_CODES")
    codes = obj["codes"]
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise WsRequestError("WRONG_FORMAT")
    if not codes:
        raise WsRequestError("INVALID_PARAM", "codes 필드가 비어 있습니다.")
    flags = []
    for snake, camel in (
        ("is_only_snapshot", "isOnlySnapshot"),
        ("is_only_realtime", "isOnlyRealtime"),
    ):
        value = obj.get(snake, obj.get(camel, False))
        if not isinstance(value, bool):
            raise WsRequestError("WRONG_FORMAT")
        flags.append(value)
    level = obj.get("level")
    if level is not None:
        if isinstance(level, str):
            try:
                level = float(level)
            except ValueError:
                raise WsRequestError("WRONG_FORMAT") from None
        if isinstance(level, bool) or not isinstance(level, int | float) or level < 0:
            raise WsRequestError("WRONG_FORMAT")
        if not math.isfinite(level):
            raise WsRequestError("WRONG_FORMAT")
    return StreamRequest(kind, tuple(dict.fromkeys(codes)), flags[0], flags[1], level)


def split_code(code: str) -> tuple[str, int]:
    """``KRW-ETH.5`` -> (``KRW-ETH``, 5). No suffix means 30 levels; a suffix outside
    1, 5, 15, 30 also means 30 (as Upbit does since 2025-07-02)."""
    market, dot, suffix = code.partition(".")
    if not dot:
        return market, MAX_BOOK_LEVELS
    depth = int(suffix) if suffix.isdigit() else MAX_BOOK_LEVELS
    return market, depth if depth in ORDERBOOK_DEPTHS else MAX_BOOK_LEVELS


# DEFAULT and SIMPLE keys, in Upbit's wire order (API.md §5.4 and the recorded frames).
_TICKER_KEYS = (
    ("type", "ty"),
    ("code", "cd"),
    ("opening_price", "op"),
    ("high_price", "hp"),
    ("low_price", "lp"),
    ("trade_price", "tp"),
    ("prev_closing_price", "pcp"),
    ("acc_trade_price", "atp"),
    ("change", "c"),
    ("change_price", "cp"),
    ("signed_change_price", "scp"),
    ("change_rate", "cr"),
    ("signed_change_rate", "scr"),
    ("ask_bid", "ab"),
    ("trade_volume", "tv"),
    ("acc_trade_volume", "atv"),
    ("trade_date", "tdt"),
    ("trade_time", "ttm"),
    ("trade_timestamp", "ttms"),
    ("acc_ask_volume", "aav"),
    ("acc_bid_volume", "abv"),
    ("highest_52_week_price", "h52wp"),
    ("highest_52_week_date", "h52wdt"),
    ("lowest_52_week_price", "l52wp"),
    ("lowest_52_week_date", "l52wdt"),
    ("market_state", "ms"),
    ("is_trading_suspended", "its"),
    ("delisting_date", "dd"),
    ("market_warning", "mw"),
    ("timestamp", "tms"),
    ("acc_trade_price_24h", "atp24h"),
    ("acc_trade_volume_24h", "atv24h"),
    ("stream_type", "st"),
)
_TRADE_KEYS = (
    ("type", "ty"),
    ("code", "cd"),
    ("timestamp", "tms"),
    ("trade_date", "td"),
    ("trade_time", "ttm"),
    ("trade_timestamp", "ttms"),
    ("trade_price", "tp"),
    ("trade_volume", "tv"),
    ("ask_bid", "ab"),
    ("prev_closing_price", "pcp"),
    ("change", "c"),
    ("change_price", "cp"),
    ("sequential_id", "sid"),
    ("best_ask_price", "bap"),
    ("best_ask_size", "bas"),
    ("best_bid_price", "bbp"),
    ("best_bid_size", "bbs"),
    ("stream_type", "st"),
)
_ORDERBOOK_KEYS = (
    ("type", "ty"),
    ("code", "cd"),
    ("timestamp", "tms"),
    ("total_ask_size", "tas"),
    ("total_bid_size", "tbs"),
    ("orderbook_units", "obu"),
    ("stream_type", "st"),
    ("level", "lv"),
)
_UNIT_KEYS = (("ask_price", "ap"), ("bid_price", "bp"), ("ask_size", "as"), ("bid_size", "bs"))
_CANDLE_KEYS = (
    ("type", "ty"),
    ("code", "cd"),
    ("candle_date_time_utc", "cdttmu"),
    ("candle_date_time_kst", "cdttmk"),
    ("opening_price", "op"),
    ("high_price", "hp"),
    ("low_price", "lp"),
    ("trade_price", "tp"),
    ("candle_acc_trade_volume", "catv"),
    ("candle_acc_trade_price", "catp"),
    ("timestamp", "tms"),
    ("stream_type", "st"),
)
_LIST_KEYS = (("method", "mthd"), ("result", "rslt"), ("ticket", "tckt"))
_RESULT_KEYS = (("type", "ty"), ("codes", "cds"), ("level", "lv"))

# simple flag -> key tuple, so building a message is one zip.
KEYS = {
    name: {simple: tuple(pair[simple] for pair in table) for simple in (False, True)}
    for name, table in (
        ("ticker", _TICKER_KEYS),
        ("trade", _TRADE_KEYS),
        ("orderbook", _ORDERBOOK_KEYS),
        ("unit", _UNIT_KEYS),
        ("candle", _CANDLE_KEYS),
        ("list", _LIST_KEYS),
        ("result", _RESULT_KEYS),
    )
}


def _change(price: float, prev_close: float) -> tuple[str, float, float]:
    """(RISE/EVEN/FALL, signed change, signed rate) against the previous day's close."""
    diff = clean_float(price - prev_close)
    kind = "RISE" if diff > 0 else "FALL" if diff < 0 else "EVEN"
    rate = round(diff / prev_close, 10) if prev_close else 0.0
    return kind, diff, rate


def ticker_message(
    simple: bool,
    code: str,
    ticker: Any,
    *,
    warning: bool,
    stream_type: str,
    market_state: str = "ACTIVE",
) -> dict[str, Any]:
    """A ticker message from a history ``TickerState``; change fields are against
    ``ticker.prev_close`` (change_price and change_rate unsigned, signed_* signed).
    ``market_state`` is ACTIVE, or DELISTED in the last frame of a delisted market."""
    last = ticker.last
    kind, diff, rate = _change(last.price, ticker.prev_close)
    moment = from_ms(last.ms)
    values = (
        "ticker",
        code,
        ticker.day_open,
        ticker.day_high,
        ticker.day_low,
        last.price,
        ticker.prev_close,
        ticker.acc_value,
        kind,
        abs(diff),
        diff,
        abs(rate),
        rate,
        last.side,
        last.volume,
        ticker.acc_volume,
        moment.strftime("%Y%m%d"),
        moment.strftime("%H%M%S"),
        last.ms,
        ticker.acc_ask_volume,
        ticker.acc_bid_volume,
        ticker.high_52w,
        ticker.high_52w_date,
        ticker.low_52w,
        ticker.low_52w_date,
        market_state,
        False,
        None,
        "CAUTION" if warning else "NONE",
        ticker.ms,
        ticker.acc_value_24h,
        ticker.acc_volume_24h,
        stream_type,
    )
    return dict(zip(KEYS["ticker"][simple], values, strict=True))


def trade_message(
    simple: bool,
    code: str,
    trade: Any,
    *,
    prev_close: float,
    best_ask: tuple[float, float],
    best_bid: tuple[float, float],
    sent_ms: int,
    stream_type: str,
) -> dict[str, Any]:
    """A trade message from a history ``Trade``; ``sequential_id`` stays an exact int and
    ``change_price`` is unsigned, as on Upbit's WebSocket (REST ticks sign it)."""
    kind, diff, _ = _change(trade.price, prev_close)
    moment = from_ms(trade.ms)
    values = (
        "trade",
        code,
        sent_ms,
        moment.strftime("%Y-%m-%d"),
        moment.strftime("%H:%M:%S"),
        trade.ms,
        trade.price,
        trade.volume,
        trade.side,
        prev_close,
        kind,
        abs(diff),
        trade.seq,
        best_ask[0],
        best_ask[1],
        best_bid[0],
        best_bid[1],
        stream_type,
    )
    return dict(zip(KEYS["trade"][simple], values, strict=True))


def orderbook_message(
    simple: bool,
    code: str,
    *,
    ms: int,
    asks: Sequence[tuple[float, float]],
    bids: Sequence[tuple[float, float]],
    depth: int,
    level: float,
    stream_type: str,
) -> dict[str, Any]:
    """A full-book message of ``depth`` units (best first); a thin side is padded with zero
    slots, and the totals sum the sizes shown."""
    unit_keys = KEYS["unit"][simple]
    units = []
    for i in range(depth):
        ask = asks[i] if i < len(asks) else (0, 0)
        bid = bids[i] if i < len(bids) else (0, 0)
        units.append(dict(zip(unit_keys, (ask[0], bid[0], ask[1], bid[1]), strict=True)))
    total_ask = round(sum(size for _, size in asks[:depth]), 8)
    total_bid = round(sum(size for _, size in bids[:depth]), 8)
    values = ("orderbook", code, ms, total_ask, total_bid, units, stream_type, whole(level))
    return dict(zip(KEYS["orderbook"][simple], values, strict=True))


def candle_message(
    simple: bool, kind: str, code: str, bar: Any, *, stream_type: str
) -> dict[str, Any]:
    """A ``candle.*`` message from a history ``Bar``; ``timestamp`` is its last trade's time."""
    values = (
        kind,
        code,
        format_utc(bar.start_ms),
        format_utc(bar.start_ms + KST_OFFSET_MS),
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        bar.value,
        bar.last_ms,
        stream_type,
    )
    return dict(zip(KEYS["candle"][simple], values, strict=True))


def list_message(
    simple: bool, ticket: str, result: Sequence[tuple[str, Sequence[str], float | None]]
) -> dict[str, Any]:
    """The LIST_SUBSCRIPTIONS answer; ``result`` holds (type, codes, level or None)."""
    result_keys = KEYS["result"][simple]
    rows = []
    for kind, codes, level in result:
        row: dict[str, Any] = {result_keys[0]: kind, result_keys[1]: list(codes)}
        if level is not None:
            row[result_keys[2]] = level
        rows.append(row)
    return dict(zip(KEYS["list"][simple], ("LIST_SUBSCRIPTIONS", rows, ticket), strict=True))


def error_message(error: WsRequestError) -> bytes:
    """``{"error":{"name":...,"message":...}}`` as sent before closing (same in every format)."""
    return _encoder.encode({"error": {"name": error.name, "message": str(error)}})


STATUS_UP = _encoder.encode({"status": "UP"})


def encode(messages: Sequence[dict[str, Any]], fmt: str) -> list[bytes]:
    """Frames for ``messages``: one JSON object per frame in DEFAULT/SIMPLE, and in the LIST
    formats one JSON array carrying all of them (empty input -> no frame)."""
    if not messages:
        return []
    if fmt.endswith("_LIST"):
        return [_encoder.encode(messages)]
    return [_encoder.encode(message) for message in messages]


def is_simple(fmt: str) -> bool:
    """Whether ``fmt`` uses the abbreviated SIMPLE keys."""
    return fmt.startswith("SIMPLE")
