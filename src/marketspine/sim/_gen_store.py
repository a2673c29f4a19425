"""The store of one simulator's generated nodes: every market's day, hour, five-minute and
minute summaries and minute trades, computed on demand by ``_gen`` and kept in bounded
LRU caches.

Caches hold results of pure functions, so they change speed, never answers, and memory
stays flat however far back clients reach. Nodes are computed and cached in blocks of
whole days (as many as hold about ``_BLOCK_NODES`` nodes), or, near "now", one parent's
children at a time, so a quiet market's months cost as few steps as a busy market's hour.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np

from .._base.time import DAY_MS, MINUTE_MS
from ..errors import UnknownMarketError
from ._gen import LEAF, LEVEL_MS, MarketGen, Nodes, TradeArrays
from ._noise import I64
from ._tick_grid import UNIT
from ._universe import SimMarket

__all__ = ["DEFAULT_CACHE_BYTES", "Lru", "NodeStore", "group", "summary", "trade_nodes"]

DEFAULT_CACHE_BYTES = 32 << 20  # per cache
_MAX_BLOCK_DAYS = 64
_BLOCK_NODES = 256
_MAX_SPAN_DAYS = 256  # days of minutes asked at once going back
_HOURS_BACK = 2  # hours stepped back one at a time before whole days
_ALL = 1 << 62  # no cap on a day's windows: trades are counted
_LEAF_CACHE_BATCH = 32  # minutes' trades are cached when asked for this many at most

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A least-recently-used map bounded by the bytes (``size``) of its values; the newest
    entry always stays. Safe across threads: the app generates REST pages on a worker
    thread while its WebSocket feed reads the same history on the event loop."""

    def __init__(self, max_bytes: int, size: Callable[[V], int]) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._max_bytes = max_bytes
        self._size = size
        self._lock = threading.Lock()
        self.bytes = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= self._size(old)
            self._data[key] = value
            self.bytes += self._size(value)
            while len(self._data) > 1 and self.bytes > self._max_bytes:
                _, evicted = self._data.popitem(last=False)
                self.bytes -= self._size(evicted)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0


def _nodes_bytes(nodes: Nodes) -> int:
    return nodes.nbytes + 200  # arrays plus the record and its key, roughly


def _trades_bytes(trades: TradeArrays) -> int:
    return trades.nbytes + 200


def trade_nodes(trades: TradeArrays) -> Nodes:
    """Each trade as a one-trade summary, so trades and nodes aggregate alike."""
    ms = trades.ms
    return Nodes(
        ms,
        np.ones(len(ms), np.int64),
        trades.price,
        trades.price,
        trades.price,
        trades.price,
        trades.volume,
        trades.volume * trades.price / UNIT,
        ms,
        ms,
    )


def group(nodes: Nodes, window: I64) -> Nodes:
    """One summary per run of equal ``window`` values (the window starts of ``nodes``)."""
    n = len(nodes)
    if n == 0:
        return nodes
    cut = np.flatnonzero(window[1:] != window[:-1]) + 1
    heads = np.concatenate([[0], cut])
    tails = np.concatenate([cut - 1, [n - 1]])
    return Nodes(
        window[heads],
        np.add.reduceat(nodes.count, heads),
        nodes.open[heads],
        np.maximum.reduceat(nodes.high, heads),
        np.minimum.reduceat(nodes.low, heads),
        nodes.close[tails],
        np.add.reduceat(nodes.volume, heads),
        np.add.reduceat(nodes.value, heads),
        nodes.first[heads],
        nodes.last[tails],
    )


def summary(parts: list[Nodes], start: int) -> Nodes:
    """One summary (``start`` as its start) of consecutive ``parts``, or empty."""
    nodes = Nodes.concat(parts)
    if len(nodes) == 0:
        return nodes
    return group(nodes, np.full(len(nodes), start, np.int64))


class NodeStore:
    """Generated nodes and trades of every market of one seed, cached."""

    def __init__(self, seed: int, markets: tuple[SimMarket, ...], cache_bytes: int) -> None:
        self._gens = {m.code: MarketGen(seed, m) for m in markets}
        self._roots: Lru[tuple[str, int], Nodes] = Lru(cache_bytes, _nodes_bytes)
        self._levels: dict[int, Lru[tuple[str, int], Nodes]] = {
            level: Lru(cache_bytes, _nodes_bytes) for level in (1, 2, 3)
        }
        self._leaves: Lru[tuple[str, int], TradeArrays] = Lru(cache_bytes, _trades_bytes)
        self._kids: Lru[tuple[str, int, int], Nodes] = Lru(cache_bytes, _nodes_bytes)

    def gen(self, code: str) -> MarketGen:
        """The generator of market ``code``. Raises UnknownMarketError."""
        try:
            return self._gens[code]
        except KeyError:
            raise UnknownMarketError(code) from None

    def _named(self) -> dict[str, Lru[Any, Any]]:
        return {
            "roots": self._roots,
            "level1": self._levels[1],
            "level2": self._levels[2],
            "level3": self._levels[3],
            "leaves": self._leaves,
            "kids": self._kids,
        }

    def stats(self) -> dict[str, int]:
        """Entries (``name``) and bytes (``name_bytes``) held by each cache."""
        stats = {}
        for name, lru in self._named().items():
            stats[name] = len(lru)
            stats[f"{name}_bytes"] = lru.bytes
        return stats

    def clear(self) -> None:
        """Forget every cached node (answers stay the same; only speed changes)."""
        for lru in self._named().values():
            lru.clear()

    def block_days(self, gen: MarketGen, level: int) -> int:
        """Days per cache block of ``level`` for this market (see _BLOCK_NODES)."""
        if level == 0:
            return _MAX_BLOCK_DAYS
        per_day = min(DAY_MS // LEVEL_MS[level], gen.market.trades_per_day)
        days = 1
        while days < _MAX_BLOCK_DAYS and 2 * days * per_day <= _BLOCK_NODES:
            days *= 2
        return days

    def nodes(self, gen: MarketGen, level: int, first_day: int, end_day: int) -> Nodes:
        """Non-empty summaries of ``level`` inside days [first_day, end_day), ascending."""
        first_day = max(first_day, gen.listed_day)
        if end_day <= first_day:
            return Nodes.empty()
        code = gen.market.code
        lru = self._roots if level == 0 else self._levels[level]
        size = self.block_days(gen, level)
        blocks = range(first_day // size, (end_day - 1) // size + 1)
        found: dict[int, Nodes] = {}
        for block in blocks:
            cached = lru.get((code, block))
            if cached is not None:
                found[block] = cached
        if len(found) < len(blocks):
            lo = next(block for block in blocks if block not in found)
            hi = next(block for block in reversed(blocks) if block not in found) + 1
            if level == 0:
                fresh = gen.roots(lo * size, hi * size)
            else:
                parents = self.nodes(gen, level - 1, lo * size, hi * size)
                wanted = np.array([block not in found for block in range(lo, hi)])
                parent_block = parents.start // (size * DAY_MS) - lo
                fresh = gen.split(parents.take(wanted[parent_block]), level)
            edges = np.searchsorted(fresh.start, np.arange(lo, hi + 1) * size * DAY_MS).tolist()
            for i, block in enumerate(range(lo, hi)):
                if block not in found:
                    part = fresh.take(slice(edges[i], edges[i + 1]))
                    lru.put((code, block), part)
                    found[block] = part
        nodes = Nodes.concat([found[block] for block in blocks])
        lo_i, hi_i = np.searchsorted(nodes.start, [first_day * DAY_MS, end_day * DAY_MS]).tolist()
        if lo_i == 0 and hi_i == len(nodes):
            return nodes
        return nodes.take(slice(lo_i, hi_i))

    def days_back(
        self, gen: MarketGen, end_day: int, want: int, per_day: int, newest: int | None = None
    ) -> int:
        """The latest day ``first`` such that the days [first, end_day) may hold ``want``
        windows (a day holds at most ``per_day`` of them, the day before ``end_day`` at most
        ``newest``, and none more than its trades), or the listing day. Read off the day
        summaries, which are cheap and cached: a guess from the market's average rate
        missed by the tenfold swings of a quiet market's activity, and generated a second,
        far larger batch of hours and minutes."""
        got = 0
        size = _MAX_BLOCK_DAYS
        end = end_day
        blocks = 1
        while end > gen.listed_day:
            begin = ((end - 1) // size - blocks + 1) * size
            days = self.nodes(gen, 0, begin, end)
            caps = np.minimum(days.count[::-1], per_day)
            last_day = int(days.start[-1]) // DAY_MS if len(days) else None
            if newest is not None and end == end_day and last_day == end_day - 1:
                caps[0] = min(int(caps[0]), newest)
            held = caps.cumsum()
            i = int(np.searchsorted(held, want - got))
            if i < len(days):
                return int(days.start[len(days) - 1 - i]) // DAY_MS
            got += int(held[-1]) if len(held) else 0
            end = begin
            blocks = min(blocks * 2, 16)
        return gen.listed_day

    def leaf_trades(self, gen: MarketGen, minutes: Nodes) -> TradeArrays:
        """All trades of the one-minute nodes ``minutes``, in time order. Small requests
        (the ones repeated near "now") are cached per minute; bulk ones are not, as
        thousands of one-trade entries would cost more to keep than to redo."""
        code = gen.market.code
        parts: list[TradeArrays | None] = []
        missing = []
        for i, start in enumerate(minutes.start.tolist()):
            cached = self._leaves.get((code, start))
            parts.append(cached)
            if cached is None:
                missing.append(i)
        if len(missing) == len(minutes) and len(minutes) > _LEAF_CACHE_BATCH:
            return gen.trades(minutes)
        if missing:
            todo = minutes.take(np.array(missing))
            fresh = gen.trades(todo)
            edges = np.concatenate([[0], np.cumsum(todo.count)]).tolist()
            for j, i in enumerate(missing):
                part = fresh.take(slice(edges[j], edges[j + 1]))
                self._leaves.put((code, int(todo.start[j])), part)
                parts[i] = part
        return TradeArrays.concat([part for part in parts if part is not None])

    def children(self, gen: MarketGen, level: int, parent_start: int) -> Nodes:
        """The non-empty nodes of ``level`` inside the one node of ``level - 1`` that starts
        at ``parent_start``. Near "now" this splits a handful of nodes instead of a block."""
        code = gen.market.code
        parent_end = parent_start + LEVEL_MS[level - 1]
        size = self.block_days(gen, level)
        nodes = self._levels[level].get((code, parent_start // DAY_MS // size))
        if nodes is None:
            nodes = self._kids.get((code, level, parent_start))
        if nodes is None:
            if level == 1:
                day = parent_start // DAY_MS
                parents = self.nodes(gen, 0, day, day + 1)
            else:
                grand_ms = LEVEL_MS[level - 2]
                parents = self.children(gen, level - 1, parent_start // grand_ms * grand_ms)
            i = int(np.searchsorted(parents.start, parent_start))
            if i < len(parents) and int(parents.start[i]) == parent_start:
                nodes = gen.split(parents.take(slice(i, i + 1)), level)
            else:
                nodes = Nodes.empty()
            self._kids.put((code, level, parent_start), nodes)
        lo, hi = np.searchsorted(nodes.start, [parent_start, parent_end]).tolist()
        return nodes if lo == 0 and hi == len(nodes) else nodes.take(slice(lo, hi))

    def children_of(self, gen: MarketGen, level: int, parents: Nodes) -> Nodes:
        """The non-empty nodes of ``level`` inside ``parents`` (nodes of ``level - 1``,
        ascending), splitting the ones not cached yet in one batch."""
        code = gen.market.code
        starts = parents.start.tolist()
        cached = [self._kids.get((code, level, start)) for start in starts]
        missing = [i for i, kids in enumerate(cached) if kids is None]
        if missing:
            fresh = gen.split(parents.take(np.array(missing)), level)
            parent_ms = LEVEL_MS[level - 1]
            bounds = [starts[i] for i in missing] + [starts[missing[-1]] + parent_ms]
            edges = np.searchsorted(fresh.start, bounds).tolist()
            for j, i in enumerate(missing):
                kids = fresh.take(slice(edges[j], edges[j + 1]))
                self._kids.put((code, level, starts[i]), kids)
                cached[i] = kids
        return Nodes.concat([kids for kids in cached if kids is not None])

    def minute_trades(self, gen: MarketGen, minute_start: int) -> TradeArrays:
        """The trades of one minute window (none if the minute is empty)."""
        five = LEVEL_MS[LEAF - 1]
        minutes = self.children(gen, LEAF, minute_start // five * five)
        i = int(np.searchsorted(minutes.start, minute_start))
        if i < len(minutes) and int(minutes.start[i]) == minute_start:
            return self.leaf_trades(gen, minutes.take(slice(i, i + 1)))
        return TradeArrays.empty()

    def pieces(self, gen: MarketGen, start: int, end: int, level: int, out: list[Nodes]) -> None:
        """Append, in time order, summaries that together hold exactly the trades in
        [start, end): whole nodes where they fit, single trades at the ragged edges."""
        if start >= end:
            return
        if level > LEAF:
            trades = self.minute_trades(gen, start // MINUTE_MS * MINUTE_MS)
            lo, hi = np.searchsorted(trades.ms, [start, end])
            out.append(trade_nodes(trades.take(slice(int(lo), int(hi)))))
            return
        length = LEVEL_MS[level]
        inner_start = -(-start // length) * length
        inner_end = end // length * length
        if inner_start > inner_end:
            self.pieces(gen, start, end, level + 1, out)
            return
        self.pieces(gen, start, inner_start, level + 1, out)
        if inner_start < inner_end:
            if level == 0:
                nodes = self.nodes(gen, 0, inner_start // DAY_MS, inner_end // DAY_MS)
            else:
                # Below the top, [start, end) lies inside one node of the level above.
                parent_ms = LEVEL_MS[level - 1]
                nodes = self.children(gen, level, inner_start // parent_ms * parent_ms)
            lo, hi = np.searchsorted(nodes.start, [inner_start, inner_end])
            out.append(nodes.take(slice(int(lo), int(hi))))
        self.pieces(gen, inner_end, end, level + 1, out)

    def aggregate(self, gen: MarketGen, start: int, end: int) -> Nodes:
        """The trades in [start, end) as one summary whose start is ``start`` (a one-element
        Nodes), or empty Nodes when there are none."""
        pieces: list[Nodes] = []
        self.pieces(gen, max(start, gen.market.listed_ms), end, 0, pieces)
        return summary(pieces, start)

    def minutes_back(self, gen: MarketGen, limit: int, want: int) -> Iterator[Nodes]:
        """Non-empty one-minute nodes starting before ``limit``, in chunks going back in
        time (each chunk ascending), until the listing: for a busy market first the five
        minutes around ``limit``, the rest of its hour and, when few trades are still wanted,
        the hours before it; then runs of whole days that hold the trades still wanted by
        the days' counts. (A quiet market's minutes come in blocks of many days anyway, so
        it starts with those.)"""
        five_ms, hour_ms = LEVEL_MS[LEAF - 1], LEVEL_MS[1]
        got = 0
        cut = limit
        if self.block_days(gen, LEAF) == 1:
            window = (limit - 1) // five_ms * five_ms
            minutes = self.children(gen, LEAF, window)
            chunk = minutes.take(slice(0, int(np.searchsorted(minutes.start, limit))))
            got += int(chunk.count.sum())
            yield chunk
            cut = window // hour_ms * hour_ms
            fives = self.children(gen, LEAF - 1, cut)
            fives = fives.take(slice(0, int(np.searchsorted(fives.start, window))))
            got += int(fives.count.sum())
            yield self.children_of(gen, LEAF, fives)
            # A few trades short: the hours before, one at a time, cost two small splits
            # each, where the whole day's minutes cost three batches of a day's nodes.
            day = self.nodes(gen, 0, cut // DAY_MS, cut // DAY_MS + 1)
            per_hour = int(day.count[0]) / 24 if len(day) else 0.0
            hours = 0
            while (
                hours < _HOURS_BACK
                and cut % DAY_MS
                and cut > gen.market.listed_ms
                and want - got <= _HOURS_BACK * per_hour
            ):
                cut -= hour_ms
                fives = self.children(gen, LEAF - 1, cut)
                got += int(fives.count.sum())
                hours += 1
                yield self.children_of(gen, LEAF, fives)
        end_day = (cut - 1) // DAY_MS + 1
        while end_day > gen.listed_day:
            first_day = self.days_back(gen, end_day, max(want - got, 1), _ALL)
            first_day = max(first_day, end_day - _MAX_SPAN_DAYS)
            minutes = self.nodes(gen, LEAF, first_day, end_day)
            chunk = minutes.take(slice(0, int(np.searchsorted(minutes.start, cut))))
            got += int(chunk.count.sum())
            yield chunk
            end_day = first_day

    def trades_back(
        self, gen: MarketGen, limit: int, max_seq: int | None, *, want: int
    ) -> Iterator[TradeArrays]:
        """Trades with ms < ``limit`` (and seq < ``max_seq``), in ascending batches going back
        in time, each older than the one before; the first batches hold ``want`` trades
        (the minutes' counts say how many minutes that takes), later ones grow."""
        for minutes in self.minutes_back(gen, limit, want):
            end = len(minutes)
            if end == 0:
                continue
            held = np.cumsum(minutes.count[::-1])
            while end > 0:
                done = len(minutes) - end
                before = int(held[done - 1]) if done else 0
                take = int(np.searchsorted(held, before + max(want, 1))) + 1 - done
                begin = max(end - take, 0)
                trades = self.leaf_trades(gen, minutes.take(slice(begin, end)))
                keep = trades.ms < limit
                if max_seq is not None:
                    keep &= trades.seq < max_seq
                yield trades.take(keep)
                end = begin
                want *= 2

    def node_before(self, gen: MarketGen, level: int, time_ms: int) -> Nodes:
        """The newest non-empty node of ``level`` that starts before ``time_ms`` (on the
        grid of ``level``), as a one-element Nodes, or empty: found top-down through the
        cached children of the newest non-empty ancestors, so quiet spells cost little."""
        if level == 0:
            return self.last_root_before(gen, -(-time_ms // DAY_MS))
        parent_ms = LEVEL_MS[level - 1]
        parent_start = (time_ms - 1) // parent_ms * parent_ms
        kids = self.children(gen, level, parent_start)
        held = int(np.searchsorted(kids.start, time_ms))
        if held:
            return kids.take(slice(held - 1, held))
        parent = self.node_before(gen, level - 1, parent_start)
        if len(parent) == 0:
            return parent
        kids = self.children(gen, level, int(parent.start[0]))
        return kids.take(slice(-1, None))

    def last_root_before(self, gen: MarketGen, day: int) -> Nodes:
        """The newest non-empty day before ``day`` (a one-element Nodes), or empty."""
        end = day
        span = 8
        while end > gen.listed_day:
            roots = self.nodes(gen, 0, end - span, end)
            if len(roots):
                return roots.take(slice(-1, None))
            end -= span
            span = min(span * 2, 1024)
        return Nodes.empty()
