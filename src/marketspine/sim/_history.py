"""The simulator's market history: candles, trades, tickers and orderbooks of every market,
derived on demand from deterministic trades (see ``_gen``).

History at time t depends only on (seed, market, t); the nodes behind it live in a
``NodeStore`` of bounded caches, which change speed, never answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._base.time import DAY_MS, MINUTE_MS, format_utc
from .._base.timeframes import Timeframe
from ._gen import LEAF, LEVEL_MS, MarketGen, Nodes, TradeArrays
from ._gen_store import DEFAULT_CACHE_BYTES, Lru, NodeStore, group, summary, trade_nodes
from ._noise import I64, stream_key, uniform
from ._tick_grid import UNIT
from ._universe import SimMarket, universe

__all__ = ["DEFAULT_CACHE_BYTES", "Bar", "Book", "History", "TickerState", "Trade"]

_WEEK_MS = 7 * DAY_MS
_LIQUID = 10_000  # trades per day from which a market's book changes every 100 ms


class Bar(NamedTuple):
    """Aggregate of the trades in one window (``start_ms`` is the window start). A named
    tuple, not a dataclass: pages build 200 at a time, and a frozen dataclass's ``__init__``
    cost four times as much (a quarter of a history page's time)."""

    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    value: float
    trades: int
    first_ms: int
    last_ms: int


class Trade(NamedTuple):
    """One trade (a named tuple for the same reason as ``Bar``)."""

    ms: int
    price: float
    volume: float
    side: str  # "BID" (taker buy) or "ASK" (taker sell)
    seq: int  # sequential_id: ms * 10000 + n


@dataclass(frozen=True, slots=True)
class Book:
    ms: int  # time of the book's last change (on its update grid, <= now)
    asks: list[tuple[float, float]]  # (price, size), ascending
    bids: list[tuple[float, float]]  # (price, size), descending


@dataclass(frozen=True, slots=True)
class TickerState:
    """Everything REST /v1/ticker and the WebSocket ticker need."""

    last: Trade
    day_open: float
    day_high: float
    day_low: float
    prev_close: float
    acc_volume: float
    acc_value: float
    acc_ask_volume: float
    acc_bid_volume: float
    acc_volume_24h: float
    acc_value_24h: float
    high_52w: float
    high_52w_date: str
    low_52w: float
    low_52w_date: str
    ms: int


@dataclass(frozen=True, slots=True)
class _TickerBase:
    """What a ticker needs from the whole minutes before the current one."""

    prev_close: int | None  # price units
    today: Nodes  # aggregate of today's whole minutes (or empty)
    bid_volume: float  # taker-buy volume of today's whole minutes
    rolling: Nodes  # aggregate of the whole minutes of the last 24 h (or empty)
    year: Nodes  # the non-empty days of the 364 days before today

    @property
    def nbytes(self) -> int:
        return self.year.nbytes + 400


def _bid_estimate(nodes: Nodes) -> float:
    """Taker-buy volume of whole nodes, estimated from their direction: a rising node
    was bought into more than sold into."""
    if len(nodes) == 0:
        return 0.0
    span = np.maximum(nodes.high - nodes.low, 1)
    share = 0.5 + 0.3 * (nodes.close - nodes.open) / span
    return float(np.sum(nodes.volume * share))


def _window_starts(timeframe: Timeframe, starts: I64) -> I64:
    """``timeframe.floor`` of each start, vectorised."""
    unit = timeframe.unit
    if unit in ("month", "year"):
        calendar = "datetime64[M]" if unit == "month" else "datetime64[Y]"
        moments = starts.astype("datetime64[ms]").astype(calendar)
        result: I64 = moments.astype("datetime64[ms]").astype(np.int64)
        return result
    if unit == "week":
        shifted: I64 = (starts - 4 * DAY_MS) // _WEEK_MS * _WEEK_MS + 4 * DAY_MS
        return shifted
    length = timeframe.fixed_ms
    assert length is not None
    floored: I64 = starts // length * length
    return floored


def _bars(nodes: Nodes) -> list[Bar]:
    """Bars of ``nodes``, newest first."""
    columns = (
        nodes.start.tolist(),
        (nodes.open / UNIT).tolist(),
        (nodes.high / UNIT).tolist(),
        (nodes.low / UNIT).tolist(),
        (nodes.close / UNIT).tolist(),
        nodes.volume.tolist(),
        nodes.value.tolist(),
        nodes.count.tolist(),
        nodes.first.tolist(),
        nodes.last.tolist(),
    )
    bars = list(map(Bar._make, zip(*columns, strict=True)))
    bars.reverse()
    return bars


def _trade_list(trades: TradeArrays) -> list[Trade]:
    """Trade records of ``trades``, in the same order."""
    prices = (trades.price / UNIT).tolist()
    sides = ["BID" if bid else "ASK" for bid in trades.bid.tolist()]
    volumes = trades.volume.tolist()
    rows = zip(trades.ms.tolist(), prices, volumes, sides, trades.seq.tolist(), strict=True)
    return list(map(Trade._make, rows))


def _level_for(timeframe: Timeframe) -> int:
    """The coarsest node level whose windows tile ``timeframe``'s windows."""
    if timeframe.unit in ("day", "week", "month", "year"):
        return 0
    minutes = timeframe.minutes
    if minutes % 60 == 0:
        return 1
    if minutes % 5 == 0:
        return 2
    return 3


class History:
    """Deterministic history of a simulated Upbit: same seed, same trades, everywhere."""

    def __init__(
        self,
        seed: int,
        *,
        markets: int = 30,
        region: str = "kr",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        """``cache_bytes`` bounds each cache (see ``cache_stats``).
        Raises InvalidRequestError for an unknown region or a market count below 1."""
        self.seed = seed
        self._markets = universe(region, markets)
        self._by_code = {m.code: m for m in self._markets}
        self._store = NodeStore(seed, self._markets, cache_bytes)
        self._book_key = stream_key(seed, "orderbook")
        self._ticker_bases: Lru[tuple[str, int], _TickerBase] = Lru(
            cache_bytes, lambda base: base.nbytes
        )

    # -- markets ---------------------------------------------------------------------------

    @property
    def markets(self) -> tuple[SimMarket, ...]:
        return self._markets

    def market(self, code: str) -> SimMarket | None:
        """The market with exactly this (upper-case) code, or None."""
        return self._by_code.get(code)

    def _gen(self, code: str) -> MarketGen:
        return self._store.gen(code)

    def cache_stats(self) -> dict[str, int]:
        """Entries (``name``) and bytes (``name_bytes``) held by each cache, all bounded."""
        stats = self._store.stats()
        stats["tickers"] = len(self._ticker_bases)
        stats["tickers_bytes"] = self._ticker_bases.bytes
        return stats

    def clear_caches(self) -> None:
        """Forget every cached result (answers stay the same; only speed changes)."""
        self._store.clear()
        self._ticker_bases.clear()

    # -- candles ---------------------------------------------------------------------------

    def aggregate(self, code: str, start_ms: int, end_ms: int) -> Bar | None:
        """The aggregate of the trades with start_ms <= ms < end_ms (``Bar.start_ms`` =
        ``start_ms``), or None if there are none. Raises UnknownMarketError."""
        gen = self._gen(code)
        nodes = self._store.aggregate(gen, start_ms, end_ms)
        return _bars(nodes)[0] if len(nodes) else None

    def candles(
        self, code: str, timeframe: Timeframe, *, before_ms: int, now_ms: int, count: int
    ) -> list[Bar]:
        """Up to ``count`` most recent existing candles with start_ms < ``before_ms``, built
        from the trades with ms <= ``now_ms`` (the window holding now is partial), newest
        first; [] before listing. Raises UnknownMarketError."""
        gen = self._gen(code)
        if count <= 0:
            return []
        limit = min(timeframe.next_start(timeframe.floor(before_ms - 1)), now_ms + 1)
        if limit <= gen.market.listed_ms:
            return []
        if timeframe.unit == "second":
            return self._second_candles(gen, limit, count)
        level = _level_for(timeframe)
        node_ms = LEVEL_MS[level]
        length = timeframe.fixed_ms or (31 if timeframe.unit == "month" else 366) * DAY_MS
        # Windows of a day or longer (their nodes are the day summaries): guess how far back
        # ``count`` of them reach from the market's usual liquidity, and if that falls short,
        # reach on by the density found. Shorter ones size each batch by the days' counts.
        density = min(1.0, gen.market.trades_per_day * length / DAY_MS)
        reach = int(count * length / max(density, 1e-9))
        end_day = (limit - 1) // DAY_MS + 1
        chunks: list[Nodes] = []
        found = 0
        while found < count and end_day > gen.listed_day:
            if level == 0:
                first_day = max(min(end_day * DAY_MS, limit) - reach, 0) // DAY_MS
                first_day = max(min(first_day, end_day - 1), gen.listed_day)
                first_day = timeframe.floor(first_day * DAY_MS) // DAY_MS
            else:
                # The newest day holds only the windows that start before ``limit``.
                newest = -(-(limit - (end_day - 1) * DAY_MS) // length)
                first_day = self._store.days_back(
                    gen, end_day, count - found, DAY_MS // length, newest
                )
            nodes = self._store.nodes(gen, level, first_day, end_day)
            nodes = nodes.take(slice(0, int(np.searchsorted(nodes.start, limit))))
            if len(nodes) and int(nodes.start[-1]) + node_ms > limit:
                partial = self._store.aggregate(gen, int(nodes.start[-1]), limit)
                nodes = Nodes.concat([nodes.take(slice(0, -1)), partial])
            windows = group(nodes, _window_starts(timeframe, nodes.start))
            chunks.append(windows)
            found += len(windows)
            end_day = first_day
            covered = limit - end_day * DAY_MS
            reach = int((count - found) * covered / found * 1.3) if found else reach * 4
        chunks.reverse()
        windows = Nodes.concat(chunks)
        return _bars(windows.take(slice(max(len(windows) - count, 0), None)))

    def _second_candles(self, gen: MarketGen, limit: int, count: int) -> list[Bar]:
        # Batches of trades end on minute boundaries, so no second is split between two.
        chunks: list[Nodes] = []
        found = 0
        for trades in self._store.trades_back(gen, limit, None, want=count):
            nodes = trade_nodes(trades)
            windows = group(nodes, nodes.start // 1000 * 1000)
            chunks.append(windows)
            found += len(windows)
            if found >= count:
                break
        chunks.reverse()
        windows = Nodes.concat(chunks)
        return _bars(windows.take(slice(max(len(windows) - count, 0), None)))

    # -- trades ----------------------------------------------------------------------------

    def _newest_trades(
        self, gen: MarketGen, limit: int, count: int, max_seq: int | None
    ) -> list[Trade]:
        if count <= 0:
            return []
        found: list[TradeArrays] = []
        total = 0
        for trades in self._store.trades_back(gen, limit, max_seq, want=count):
            found.append(trades)
            total += len(trades)
            if total >= count:
                break
        found.reverse()
        every = TradeArrays.concat(found)
        newest = _trade_list(every.take(slice(max(len(every) - count, 0), None)))
        newest.reverse()
        return newest

    def trades(self, code: str, *, before_ms: int, count: int) -> list[Trade]:
        """Up to ``count`` newest trades with ms < ``before_ms``, newest first.
        Raises UnknownMarketError."""
        return self._newest_trades(self._gen(code), before_ms, count, None)

    def trades_before_seq(self, code: str, seq: int, count: int) -> list[Trade]:
        """The ``count`` trades immediately before the trade with sequential_id ``seq``,
        newest first. Raises UnknownMarketError."""
        return self._newest_trades(self._gen(code), seq // 10_000 + 1, count, seq)

    def trades_between(self, code: str, start_ms: int, end_ms: int) -> list[Trade]:
        """Trades with start_ms <= ms < end_ms, ascending. Raises UnknownMarketError."""
        gen = self._gen(code)
        start_ms = max(start_ms, gen.market.listed_ms)
        if end_ms <= start_ms:
            return []
        five_ms, hour_ms = LEVEL_MS[LEAF - 1], LEVEL_MS[1]
        if start_ms // hour_ms == (end_ms - 1) // hour_ms:
            # Streaming asks for a few hundred ms at a time: split only the nodes involved.
            fives = self._store.children(gen, LEAF - 1, start_ms // hour_ms * hour_ms)
            lo, hi = np.searchsorted(fives.start, [start_ms // five_ms * five_ms, end_ms])
            minutes = self._store.children_of(gen, LEAF, fives.take(slice(int(lo), int(hi))))
        else:
            minutes = self._store.nodes(gen, LEAF, start_ms // DAY_MS, (end_ms - 1) // DAY_MS + 1)
        lo, hi = np.searchsorted(minutes.start, [start_ms // MINUTE_MS * MINUTE_MS, end_ms])
        trades = self._store.leaf_trades(gen, minutes.take(slice(int(lo), int(hi))))
        lo, hi = np.searchsorted(trades.ms, [start_ms, end_ms])
        return _trade_list(trades.take(slice(int(lo), int(hi))))

    def last_trade(self, code: str, now_ms: int) -> Trade | None:
        """The newest trade at or before ``now_ms``, or None. Raises UnknownMarketError."""
        gen = self._gen(code)
        minute = now_ms // MINUTE_MS * MINUTE_MS
        trades = self._store.minute_trades(gen, minute)
        held = int(np.searchsorted(trades.ms, now_ms + 1))
        if held == 0:
            before = self._store.node_before(gen, LEAF, minute)
            if len(before) == 0:
                return None
            trades = self._store.minute_trades(gen, int(before.start[0]))
            held = len(trades)
        return _trade_list(trades.take(slice(held - 1, held)))[0]

    def prev_close(self, code: str, ms: int) -> float | None:
        """Price of the last trade before 00:00 UTC of ``ms``'s day, or None.
        Raises UnknownMarketError."""
        root = self._store.last_root_before(self._gen(code), ms // DAY_MS)
        return float(root.close[0]) / UNIT if len(root) else None

    # -- ticker and orderbook ---------------------------------------------------------------

    def ticker(self, code: str, now_ms: int) -> TickerState | None:
        """The ticker at ``now_ms``, or None before the market's first trade.

        ``acc_bid_volume`` splits the day's volume by taker side from the candles'
        direction (whole minutes) and the actual trades (the current minute): summing the
        sides of every trade of the day would cost a day of trades per call.
        Raises UnknownMarketError."""
        gen = self._gen(code)
        last = self.last_trade(code, now_ms)
        if last is None:
            return None
        minute = now_ms // MINUTE_MS * MINUTE_MS
        base = self._ticker_base(gen, minute)
        current = self._store.minute_trades(gen, minute)
        current = current.take(slice(0, int(np.searchsorted(current.ms, now_ms + 1))))
        ragged = self._store.minute_trades(gen, minute - DAY_MS)
        ragged = ragged.take(slice(int(np.searchsorted(ragged.ms, now_ms + 1 - DAY_MS)), None))
        day_start = minute // DAY_MS * DAY_MS
        now_part = trade_nodes(current)
        today = summary([base.today, now_part], day_start)
        rolling = summary([trade_nodes(ragged), base.rolling, now_part], minute)
        if base.prev_close is not None:
            prev_close = base.prev_close / UNIT
        else:  # listed today: there is no previous close, so the day's open stands in
            prev_close = float(today.open[0]) / UNIT
        if len(today):
            day_open, day_high = float(today.open[0]) / UNIT, float(today.high[0]) / UNIT
            day_low = float(today.low[0]) / UNIT
            acc_volume, acc_value = float(today.volume[0]), float(today.value[0])
        else:
            day_open = day_high = day_low = prev_close
            acc_volume = acc_value = 0.0
        acc_bid = base.bid_volume + float(np.sum(current.volume[current.bid]))
        year = Nodes.concat([base.year, today]) if len(today) else base.year
        top, bottom = int(np.argmax(year.high)), int(np.argmin(year.low))
        return TickerState(
            last=last,
            day_open=day_open,
            day_high=day_high,
            day_low=day_low,
            prev_close=prev_close,
            acc_volume=acc_volume,
            acc_value=acc_value,
            acc_ask_volume=max(acc_volume - acc_bid, 0.0),
            acc_bid_volume=min(acc_bid, acc_volume),
            acc_volume_24h=float(rolling.volume[0]) if len(rolling) else 0.0,
            acc_value_24h=float(rolling.value[0]) if len(rolling) else 0.0,
            high_52w=float(year.high[top]) / UNIT,
            high_52w_date=format_utc(int(year.start[top]))[:10],
            low_52w=float(year.low[bottom]) / UNIT,
            low_52w_date=format_utc(int(year.start[bottom]))[:10],
            ms=min(now_ms, last.ms + 1 + last.seq % 37),
        )

    def _ticker_base(self, gen: MarketGen, minute: int) -> _TickerBase:
        """The parts of a ticker that stay fixed during the minute starting at ``minute``
        (memoised: tickers are asked for several times a second)."""
        key = (gen.market.code, minute)
        base = self._ticker_bases.get(key)
        if base is None:
            day_start = minute // DAY_MS * DAY_MS
            prev = self._store.last_root_before(gen, day_start // DAY_MS)
            today: list[Nodes] = []
            self._store.pieces(gen, max(day_start, gen.market.listed_ms), minute, 0, today)
            earlier: list[Nodes] = []
            day_ago = max(minute + MINUTE_MS - DAY_MS, gen.market.listed_ms)
            self._store.pieces(gen, day_ago, day_start, 0, earlier)
            base = _TickerBase(
                prev_close=int(prev.close[0]) if len(prev) else None,
                today=summary(today, day_start),
                bid_volume=sum(_bid_estimate(nodes) for nodes in today),
                rolling=summary(earlier + today, minute),
                year=self._store.nodes(gen, 0, day_start // DAY_MS - 364, day_start // DAY_MS),
            )
            self._ticker_bases.put(key, base)
        return base

    def orderbook(self, code: str, now_ms: int, depth: int = 30) -> Book:
        """The book at ``now_ms``: best ask and bid straddle the last trade, ``depth``
        levels a side at most (a thin market may show fewer). Raises UnknownMarketError."""
        gen = self._gen(code)
        market = gen.market
        step_ms = 100 if market.trades_per_day >= _LIQUID else 10_000
        changed = now_ms // step_ms * step_ms
        last = self.last_trade(code, now_ms)
        if last is None:
            day = np.array([max(now_ms, market.listed_ms) // DAY_MS], np.int64)
            price = int(gen.grid.snap(gen.boundary(day))[0])
            taker_buy = True
        else:
            price = round(last.price * UNIT)
            taker_buy = last.side == "BID"
        key = self._book_key ^ market.key
        # Sizes of level i come from counters 2i and 2i + 1, so a shallower book is the top
        # of a deeper one; how many levels a thin book has comes from its own lane.
        rand = uniform(key, np.arange(2 * depth, dtype=np.int64) + changed * 64).tolist()
        levels = depth
        if market.trades_per_day < _LIQUID:
            thin = float(uniform(key, np.array([changed], np.int64), 1)[0])
            levels = min(depth, 5 + int(thin * 26))
        tick = gen.grid.tick_at

        def below(units: int) -> int:
            # One tick down, in the smaller tick of the band below when crossing into it.
            lower = units - tick(units)
            return units - tick(lower) if tick(lower) < tick(units) else lower

        ask = price if taker_buy else price + tick(price)
        bid = below(ask)
        notional = market.trade_notional * (3.0 if market.trades_per_day >= _LIQUID else 1.0)
        asks: list[tuple[float, float]] = []
        bids: list[tuple[float, float]] = []
        for i in range(levels):
            size_a = notional * (0.05 + 2 * rand[2 * i] ** 2) / (ask / UNIT)
            asks.append((ask / UNIT, round(size_a, 8)))
            if bid > 0:
                size_b = notional * (0.05 + 2 * rand[2 * i + 1] ** 2) / (bid / UNIT)
                bids.append((bid / UNIT, round(size_b, 8)))
            ask += tick(ask)
            bid = below(bid) if bid > 1 else 0
        return Book(ms=changed, asks=asks, bids=bids)
