"""The pure WebSocket feed of one subscription: simulated time in, Upbit messages out (no I/O).

``Feed.tick(now_ms, real_s)`` returns the messages due: the SNAPSHOT messages first, then
every trade, a ticker per trade batch, the orderbook when it changed, candles at most once
per ``CANDLE_EVERY_S`` of real time while they form plus each window's final state once it
closes. Quiet markets send nothing. A market delisted while subscribed sends one last
ticker with ``market_state`` ``DELISTED`` and then goes silent (no trade after its
delisting is sent).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._base.timeframes import Timeframe
from .._upbit.levels import aggregate_levels, is_supported_level, supported_levels
from .._upbit.limits import MAX_BOOK_LEVELS
from .._upbit.ticks import tick_size
from .._upbit.ws_format import (
    STREAM_TYPES,
    SubscribeRequest,
    candle_message,
    is_simple,
    orderbook_message,
    split_code,
    ticker_message,
    trade_message,
)

__all__ = ["BOOK_BUDGET_S", "CANDLE_EVERY_S", "TICK_S", "Delisting", "Feed"]

TICK_S = 0.1  # real seconds between stream ticks
CANDLE_EVERY_S = 1.0  # a forming candle is re-sent at most this often (real seconds)
BOOK_BUDGET_S = 0.03  # orderbook building per tick and connection (see Feed._book_step)

# Market code -> simulated ms it was (or will be) delisted, or None while it stays listed.
Delisting = Callable[[str], int | None]


def _never(code: str) -> int | None:
    return None


@dataclass
class _Stream:
    """One subscribed type: its codes (market -> depth) and what to send."""

    kind: str
    codes: dict[str, int]
    listed: tuple[str, ...]  # codes as the client wrote them, for LIST_SUBSCRIPTIONS
    snapshot: bool
    realtime: bool
    level: float | None
    timeframe: Timeframe | None


@dataclass
class _CandleState:
    """Per (type, code): what was last sent and what changed since."""

    sent: Any = None  # the Bar last sent
    dirty: int | None = None  # start of a window with unsent changes
    emitted_at: float = -1e9  # real time of the last frame


@dataclass
class Feed:
    """One connection's subscription: turns simulated time into messages (no I/O).

    The first ``tick(now_ms, real_s)`` returns the SNAPSHOT messages; every later one the
    REALTIME messages for everything that happened in (previous now, now_ms].
    """

    history: Any
    streams: list[_Stream]
    format: str
    ticket: str
    started_ms: int  # simulated time of the subscription: snapshots show this moment
    delisted: Delisting = _never
    _last_ms: dict[str, int] = field(default_factory=dict)
    _book_ms: dict[tuple[str, int, float], int] = field(default_factory=dict)
    _candles: dict[tuple[str, str], _CandleState] = field(default_factory=dict)
    _best: dict[tuple[str, int], Any] = field(default_factory=dict)
    _book_cursor: int = 0  # where the next tick's orderbook round starts
    _snapshot_done: bool = False

    @classmethod
    def from_request(
        cls,
        history: Any,
        request: SubscribeRequest,
        fmt: str,
        now_ms: int,
        region: str = "kr",
        delisted: Delisting = _never,
    ) -> Feed:
        """The feed of ``request`` made at simulated time ``now_ms``: unknown, lower-case,
        not yet listed and delisted codes are dropped silently, as are orderbook codes
        whose ``level`` the market does not support (``region`` decides which levels
        exist). ``delisted`` tells when a market leaves (it may change while subscribed)."""
        merged: dict[str, _Stream] = {}
        for item in request.streams:
            codes: dict[str, int] = {}
            listed: list[str] = []
            for raw in item.codes:
                market, depth = split_code(raw) if item.type == "orderbook" else (raw, 0)
                found = history.market(market)
                if found is None or found.listed_ms > now_ms:
                    continue
                gone = delisted(market)
                if gone is not None and gone <= now_ms:
                    continue
                if item.type == "orderbook" and not _level_supported(
                    history, found, item.level, now_ms, region
                ):
                    continue
                codes[market] = depth
                listed.append(raw)
            merged[item.type] = _Stream(  # a type named twice: the later object wins
                item.type,
                codes,
                tuple(listed),
                snapshot=not item.only_realtime,
                realtime=not item.only_snapshot,
                level=item.level,
                timeframe=STREAM_TYPES[item.type],
            )
        return cls(history, list(merged.values()), fmt, request.ticket, now_ms, delisted)

    def tick(self, now_ms: int, real_s: float) -> list[dict[str, Any]]:
        """Messages due at simulated time ``now_ms`` (``real_s``: a monotonic real clock).
        The first call starts with the SNAPSHOT messages as of the subscription."""
        self._best.clear()
        out: list[dict[str, Any]] = []
        if not self._snapshot_done:
            self._snapshot_done = True
            for stream in self.streams:
                for code in stream.codes:
                    self._last_ms[code] = self.started_ms
            out = self.snapshot(self.started_ms, real_s)
        if now_ms > self.started_ms:
            out += self.step(now_ms, real_s)
        return out

    def listing(self) -> list[tuple[str, list[str], float | None]]:
        """(type, codes, level) rows for LIST_SUBSCRIPTIONS; level only on orderbook."""
        return [
            (s.kind, list(s.listed), (s.level or 0) if s.kind == "orderbook" else None)
            for s in self.streams
            if s.listed
        ]

    def snapshot(self, now_ms: int, real_s: float) -> list[dict[str, Any]]:
        """SNAPSHOT messages: the latest state of every code whose stream wants one."""
        out: list[dict[str, Any]] = []
        simple = is_simple(self.format)
        history = self.history
        for stream in self.streams:
            if not stream.snapshot:
                continue
            for code, depth in stream.codes.items():
                if stream.kind == "ticker":
                    ticker = history.ticker(code, now_ms)
                    if ticker is not None:
                        out.append(self._ticker(simple, code, ticker, "SNAPSHOT"))
                elif stream.kind == "trade":
                    last = history.last_trade(code, now_ms)
                    if last is not None:
                        out.append(self._trade(simple, code, last, now_ms, "SNAPSHOT"))
                elif stream.kind == "orderbook":
                    book = history.orderbook(code, now_ms, _book_depth(stream.level))
                    out.append(self._book(simple, code, depth, stream.level, book, "SNAPSHOT"))
                else:
                    assert stream.timeframe is not None
                    bars = history.candles(
                        code, stream.timeframe, before_ms=now_ms + 1, now_ms=now_ms, count=1
                    )
                    if bars:
                        state = self._candles.setdefault((stream.kind, code), _CandleState())
                        state.sent = bars[0]
                        state.emitted_at = real_s
                        out.append(
                            candle_message(
                                simple, stream.kind, code, bars[0], stream_type="SNAPSHOT"
                            )
                        )
        return out

    def step(self, now_ms: int, real_s: float) -> list[dict[str, Any]]:
        """REALTIME messages for what happened since the previous step (or the snapshot)."""
        simple = is_simple(self.format)
        history = self.history
        leaving = self._leaving(now_ms)
        batches: dict[str, list[Any]] = {}
        for stream in self.streams:
            if not stream.realtime or stream.kind == "orderbook":
                continue
            for code in stream.codes:
                if code in batches:
                    continue
                last = self._last_ms.get(code, now_ms)
                # Nothing traded at or after the delisting reaches the client.
                end = min(now_ms, leaving[code] - 1) if code in leaving else now_ms
                if end > last:
                    batches[code] = history.trades_between(code, last + 1, end + 1)
                    self._last_ms[code] = end
                else:
                    batches[code] = []
        out = self._realtime(simple, batches, now_ms, real_s, leaving)
        if leaving:
            out += self._farewell(simple, leaving)
        return out

    def _leaving(self, now_ms: int) -> dict[str, int]:
        """Subscribed codes delisted at or before ``now_ms`` -> their delisting time."""
        leaving: dict[str, int] = {}
        for stream in self.streams:
            for code in stream.codes:
                gone = self.delisted(code)
                if gone is not None and gone <= now_ms:
                    leaving[code] = gone
        return leaving

    def _farewell(self, simple: bool, leaving: dict[str, int]) -> list[dict[str, Any]]:
        """The last ticker of each delisted code (``market_state`` DELISTED) to the streams
        that want tickers; then the codes leave every stream, so nothing more is sent."""
        out: list[dict[str, Any]] = []
        for stream in self.streams:
            if stream.kind == "ticker" and stream.realtime:
                for code in stream.codes:
                    if code in leaving:
                        ticker = self.history.ticker(code, leaving[code] - 1)
                        if ticker is not None:
                            out.append(
                                self._ticker(simple, code, ticker, "REALTIME", delisted=True)
                            )
            stream.codes = {c: d for c, d in stream.codes.items() if c not in leaving}
        return out

    def _realtime(
        self,
        simple: bool,
        batches: dict[str, list[Any]],
        now_ms: int,
        real_s: float,
        leaving: dict[str, int],
    ) -> list[dict[str, Any]]:
        history = self.history
        out: list[dict[str, Any]] = []
        for stream in self.streams:
            if not stream.realtime:
                continue
            if stream.kind == "orderbook":
                out.extend(self._book_step(simple, stream, now_ms, leaving))
            elif stream.kind == "ticker":
                for code in stream.codes:
                    if batches.get(code) and code not in leaving:
                        ticker = history.ticker(code, now_ms)
                        if ticker is not None:
                            out.append(self._ticker(simple, code, ticker, "REALTIME"))
            elif stream.kind == "trade":
                for code in stream.codes:
                    for trade in batches.get(code, ()):
                        out.append(self._trade(simple, code, trade, now_ms, "REALTIME"))
            else:
                for code in stream.codes:
                    # A delisted market's last windows are built from its trades before it.
                    until = min(now_ms, leaving[code] - 1) if code in leaving else now_ms
                    out.extend(
                        self._candle_step(
                            simple, stream, code, batches.get(code, []), until, real_s
                        )
                    )
        return out

    def _book_step(
        self, simple: bool, stream: _Stream, now_ms: int, leaving: dict[str, int]
    ) -> list[dict[str, Any]]:
        """Books that changed since they were last sent. Building books costs the most, so
        one tick spends at most BOOK_BUDGET_S on them and the next tick goes on where this
        one stopped: with hundreds of codes each book is then sent less often than every
        100 ms, but the event loop stays responsive and trades are never held back."""
        codes = list(stream.codes.items())
        deadline = time.perf_counter() + BOOK_BUDGET_S
        out: list[dict[str, Any]] = []
        for i in range(len(codes)):
            if i and time.perf_counter() > deadline:
                self._book_cursor += i
                return out
            code, depth = codes[(self._book_cursor + i) % len(codes)]
            if code in leaving:
                continue
            book = self.history.orderbook(code, now_ms, _book_depth(stream.level))
            if self._book_ms.get((code, depth, stream.level or 0)) != book.ms:
                out.append(self._book(simple, code, depth, stream.level, book, "REALTIME"))
        self._book_cursor = 0
        return out

    # -- message builders with the lookups they need ------------------------------------

    def _ticker(
        self, simple: bool, code: str, ticker: Any, stream_type: str, *, delisted: bool = False
    ) -> dict[str, Any]:
        market = self.history.market(code)
        warning = bool(getattr(market, "warning", False))
        return ticker_message(
            simple,
            code,
            ticker,
            warning=warning,
            stream_type=stream_type,
            market_state="DELISTED" if delisted else "ACTIVE",
        )

    def _trade(
        self, simple: bool, code: str, trade: Any, now_ms: int, stream_type: str
    ) -> dict[str, Any]:
        # best_* are the book at the trade's millisecond: a function of the trade alone, so
        # every connection (and a snapshot) sends the same quotes with the same trade.
        moment = (code, trade.ms)
        book = self._best.get(moment)
        if book is None:
            book = self._best[moment] = self.history.orderbook(code, trade.ms, 1)
        prev_close = self.history.prev_close(code, trade.ms)
        return trade_message(
            simple,
            code,
            trade,
            prev_close=trade.price if prev_close is None else prev_close,
            best_ask=book.asks[0] if book.asks else (0, 0),
            best_bid=book.bids[0] if book.bids else (0, 0),
            # Upbit stamps a trade frame a few tens of ms after the trade; never after now.
            sent_ms=min(trade.ms + 40, max(now_ms, trade.ms)),
            stream_type=stream_type,
        )

    def _book(
        self, simple: bool, code: str, depth: int, level: float | None, book: Any, stream_type: str
    ) -> dict[str, Any]:
        self._book_ms[(code, depth, level or 0)] = book.ms
        asks, bids = book.asks, book.bids
        if level:
            asks, bids = aggregate_levels(asks, bids, level)
        return orderbook_message(
            simple,
            code,
            ms=book.ms,
            asks=asks,
            bids=bids,
            depth=depth,
            level=level or 0,
            stream_type=stream_type,
        )

    def _candle_step(
        self,
        simple: bool,
        stream: _Stream,
        code: str,
        trades: list[Any],
        now_ms: int,
        real_s: float,
    ) -> list[dict[str, Any]]:
        """Candle messages of one code: each window that closed with unsent changes gets its
        final state; the forming window at most every CANDLE_EVERY_S (real time)."""
        tf = stream.timeframe
        assert tf is not None
        state = self._candles.setdefault((stream.kind, code), _CandleState())
        windows = sorted({tf.floor(t.ms) for t in trades})
        if state.dirty is not None and (not windows or windows[0] != state.dirty):
            windows.insert(0, state.dirty)
        out: list[dict[str, Any]] = []
        for start in windows:
            closed = tf.next_start(start) <= now_ms + 1
            if not closed and real_s - state.emitted_at < CANDLE_EVERY_S:
                state.dirty = start
                continue
            bars = self.history.candles(code, tf, before_ms=start + 1, now_ms=now_ms, count=1)
            state.dirty = None
            if not bars or bars[0].start_ms != start or bars[0] == state.sent:
                continue
            state.sent = bars[0]
            state.emitted_at = real_s
            out.append(candle_message(simple, stream.kind, code, bars[0], stream_type="REALTIME"))
        return out


def _book_depth(level: float | None) -> int:
    # Aggregated levels each swallow several native ones: ask the history for a deeper book.
    return MAX_BOOK_LEVELS * 10 if level else MAX_BOOK_LEVELS


def _level_supported(
    history: Any, market: Any, level: float | None, now_ms: int, region: str
) -> bool:
    """Level 0 (the native tick) everywhere; other levels as ``supported_levels`` allows for
    the tick at the market's last price (its best ask before any trade)."""
    if not level:
        return True
    last = history.last_trade(market.code, now_ms)
    if last is not None:
        price = float(last.price)
    else:
        asks = history.orderbook(market.code, now_ms, 1).asks
        price = float(asks[0][0]) if asks else 1.0
    levels = supported_levels(market.quote, tick_size(market.quote, price), region)
    return is_supported_level(level, levels)
