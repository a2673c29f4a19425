"""Top-down generation of one market's trades (pure, vectorised with numpy).

A UTC day is a root node: its trade count, open/high/low/close, volume, value and first
and last trade times come from hashes of (seed, market, day) and a smooth long-run price
curve, so any day is computed without its neighbours. A node is split into children
(day → 24 hours → 12 five-minute → 5 one-minute) conditioned on its summary: children's
counts sum to the parent's, their opens and closes lie on one path of trade prices that
starts at the parent's open, ends at its close and touches its high and low, and their
volumes and values sum to the parent's. A one-minute node finally becomes its trades.
Every summary is therefore exactly the aggregate of the trades below it.

Prices are int64 counts of 1e-8 of the quote currency (every tick table's smallest tick),
always on the tick grid. Times are UTC epoch ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .._base.time import DAY_MS, HOUR_MS, MINUTE_MS, days_from_civil
from ._noise import F64, I64, exp, stream_key, uniform, uniforms, value_noise
from ._tick_grid import UNIT, TickGrid
from ._universe import SimMarket

__all__ = ["LEAF", "LEVEL_MS", "MarketGen", "Nodes", "TradeArrays"]

LEVEL_MS = (DAY_MS, HOUR_MS, 5 * MINUTE_MS, MINUTE_MS)  # day, hour, 5 minutes, minute
LEAF = len(LEVEL_MS) - 1
_REF_DAY = days_from_civil(2026, 11, 1)  # prices sit near SimMarket.ref_price here
_OCTAVES = ((1024, 0.6), (256, 0.35), (64, 0.2), (16, 0.1), (4, 0.05), (1, 0.02))

# Lanes: independent random sub-streams. Each purpose has its own number, so no two
# purposes ever draw the same hash (counters are node starts, or node start + index).
_L_ACTIVITY, _L_COUNT, _L_OPEN, _L_CLOSE, _L_RANGE, _L_HIGH, _L_LOW = 1, 2, 3, 4, 5, 6, 7
_L_EXTREME, _L_VWAP, _L_VOLUME, _L_FIRST, _L_LAST = 8, 9, 10, 11, 12
_L_POSH, _L_POSL, _L_PATH = 20, 21, 22
_L_WEIGHT, _L_XHIGH, _L_XLOW, _L_XH2, _L_XL2, _L_TIME, _L_SIDE = 30, 31, 32, 33, 34, 35, 36


@dataclass(slots=True)
class Nodes:
    """Summaries of non-empty windows of one level, ascending by ``start``."""

    start: I64
    count: I64
    open: I64
    high: I64
    low: I64
    close: I64
    volume: F64
    value: F64
    first: I64  # time of the first trade
    last: I64  # time of the last trade

    def __len__(self) -> int:
        return len(self.start)

    def take(self, index: NDArray[np.intp] | NDArray[np.bool_] | slice) -> Nodes:
        """The nodes at ``index`` (an index array, a mask or a slice)."""
        return Nodes(
            self.start[index],
            self.count[index],
            self.open[index],
            self.high[index],
            self.low[index],
            self.close[index],
            self.volume[index],
            self.value[index],
            self.first[index],
            self.last[index],
        )

    @staticmethod
    def concat(parts: Sequence[Nodes]) -> Nodes:
        """All ``parts`` one after another."""
        parts = [part for part in parts if len(part.start)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return Nodes.empty()
        return Nodes(
            np.concatenate([p.start for p in parts]),
            np.concatenate([p.count for p in parts]),
            np.concatenate([p.open for p in parts]),
            np.concatenate([p.high for p in parts]),
            np.concatenate([p.low for p in parts]),
            np.concatenate([p.close for p in parts]),
            np.concatenate([p.volume for p in parts]),
            np.concatenate([p.value for p in parts]),
            np.concatenate([p.first for p in parts]),
            np.concatenate([p.last for p in parts]),
        )

    @staticmethod
    def empty() -> Nodes:
        return _EMPTY_NODES

    @property
    def nbytes(self) -> int:
        return 80 * len(self.start)


@dataclass(slots=True)
class TradeArrays:
    """Trades in time order (equal ms ordered by ``seq``)."""

    ms: I64
    price: I64
    volume: F64
    bid: NDArray[np.bool_]  # taker buy
    seq: I64

    def __len__(self) -> int:
        return len(self.ms)

    def take(self, index: NDArray[np.intp] | NDArray[np.bool_] | slice) -> TradeArrays:
        return TradeArrays(
            self.ms[index],
            self.price[index],
            self.volume[index],
            self.bid[index],
            self.seq[index],
        )

    @staticmethod
    def concat(parts: Sequence[TradeArrays]) -> TradeArrays:
        """All ``parts`` one after another."""
        parts = [part for part in parts if len(part.ms)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return TradeArrays.empty()
        return TradeArrays(
            np.concatenate([p.ms for p in parts]),
            np.concatenate([p.price for p in parts]),
            np.concatenate([p.volume for p in parts]),
            np.concatenate([p.bid for p in parts]),
            np.concatenate([p.seq for p in parts]),
        )

    @staticmethod
    def empty() -> TradeArrays:
        return _EMPTY_TRADES

    @property
    def nbytes(self) -> int:
        return 33 * len(self.ms)


_INTS = np.zeros(0, np.int64)
_FLOATS = np.zeros(0, np.float64)
_EMPTY_NODES = Nodes(_INTS, _INTS, _INTS, _INTS, _INTS, _INTS, _FLOATS, _FLOATS, _INTS, _INTS)
_EMPTY_TRADES = TradeArrays(_INTS, _INTS, _FLOATS, np.zeros(0, np.bool_), _INTS)
for _array in (_INTS, _FLOATS, _EMPTY_TRADES.bid):
    _array.flags.writeable = False  # shared by every empty result


def _segment_sum(values: F64, offsets: I64) -> F64:
    result: F64 = np.add.reduceat(values, offsets) if len(values) else np.zeros(0)
    return result


class MarketGen:
    """The generator of one market's history for one seed. Every method is a pure function
    of its arguments (and the seed and market), whatever batch a node is computed in."""

    def __init__(self, seed: int, market: SimMarket) -> None:
        self.market = market
        self.grid = TickGrid(market.quote)
        self.listed_day = market.listed_ms // DAY_MS
        # No trade from the delisting day on (seeded delistings fall on 00:00 UTC).
        self.end_day = None if market.delisted_ms is None else -(-market.delisted_ms // DAY_MS)
        self._keys = [stream_key(seed, market.key, "level", level) for level in range(4)]
        self._octave_keys = [stream_key(seed, market.key, "price", p) for p, _ in _OCTAVES]
        self._activity_key = stream_key(seed, market.key, "activity")
        self._ref_units = market.ref_price * UNIT
        self._vol_scale = market.volatility / 0.035
        ref = np.full(1, _REF_DAY, np.int64)
        self._ref_noise = sum(
            amplitude * self._vol_scale * float(value_noise(key, ref, period)[0])
            for key, (period, amplitude) in zip(self._octave_keys, _OCTAVES, strict=True)
        )

    # -- day roots -------------------------------------------------------------------------

    def boundary(self, days: I64) -> F64:
        """The price curve (float units) at 00:00 UTC of each day: a long-run drift plus
        smooth noise at several scales, equal to ``ref_price`` on the reference day."""
        log_ratio = self.market.growth * (days - _REF_DAY).astype(np.float64) / 365.25
        for key, (period, amplitude) in zip(self._octave_keys, _OCTAVES, strict=True):
            wave = value_noise(key, days, period)
            log_ratio = log_ratio + amplitude * self._vol_scale * wave
        log_ratio = log_ratio - self._ref_noise
        result: F64 = self._ref_units * exp(log_ratio)
        return result

    def roots(self, first_day: int, end_day: int) -> Nodes:
        """Summaries of the non-empty days among day numbers [first_day, end_day)."""
        if self.end_day is not None:
            end_day = min(end_day, self.end_day)
        days = np.arange(max(first_day, self.listed_day), end_day, dtype=np.int64)
        if len(days) == 0:
            return Nodes.empty()
        start = days * DAY_MS
        # Lanes _L_ACTIVITY (1) .. _L_LAST (12) are rows 0 .. 11 of one table.
        table = uniforms(self._keys[0], start, tuple(range(_L_ACTIVITY, _L_LAST + 1)))

        def rand(lane: int) -> F64:
            row: F64 = table[lane - _L_ACTIVITY]
            return row

        sparse = self.market.trades_per_day < 1000
        slow = value_noise(self._activity_key, days, 24)
        activity = exp((1.5 if sparse else 0.5) * slow) * (0.25 + 2.25 * rand(_L_ACTIVITY) ** 2)
        count = np.floor(self.market.trades_per_day * activity + rand(_L_COUNT)).astype(np.int64)
        keep = count > 0
        days, start, count = days[keep], start[keep], count[keep]
        if len(days) == 0:
            return Nodes.empty()
        table = table[:, keep]

        def rnd(lane: int) -> F64:
            row: F64 = table[lane - _L_ACTIVITY]
            return row

        jitter = 0.002 * self._vol_scale
        curve = self.boundary(np.append(days, days + 1))
        at_open, at_close = curve[: len(days)], curve[len(days) :]
        open_ = self.grid.snap(at_open * (1 + jitter * (rnd(_L_OPEN) - 0.5)))
        close = self.grid.snap(at_close * (1 + jitter * (rnd(_L_CLOSE) - 0.5)))
        close = np.where(count == 1, open_, close)
        top, bottom = np.maximum(open_, close), np.minimum(open_, close)
        # Few trades cover less of the price range than many.
        reach = self.market.volatility * (0.3 + rnd(_L_RANGE)) * np.minimum(1.0, count / 64)
        high = np.maximum(self.grid.snap(top * (1 + reach * rnd(_L_HIGH)), "up"), top)
        low = np.minimum(self.grid.snap(bottom * (1 - reach * rnd(_L_LOW)), "down"), bottom)
        # Realisable with the count: one trade is flat, two touch only open and close,
        # three reach beyond them on one side at most.
        high = np.where(count <= 2, top, high)
        low = np.where(count <= 2, bottom, low)
        one_side = rnd(_L_EXTREME) < 0.5
        high = np.where((count == 3) & ~one_side, top, high)
        low = np.where((count == 3) & one_side, bottom, low)

        vwap = low + (high - low) * (0.3 + 0.4 * rnd(_L_VWAP))
        vwap = np.where(high == low, low.astype(np.float64), vwap)
        mid_quote = (high + low) / (2.0 * UNIT)
        volume = count * self.market.trade_notional * (0.5 + rnd(_L_VOLUME)) / mid_quote
        value = volume * vwap / UNIT

        u_first, u_last = rnd(_L_FIRST), rnd(_L_LAST)
        lone = count == 1
        first_frac = np.where(lone, u_first, np.minimum(2 * u_first**2 / (count + 1), 0.999))
        first = start + np.floor(DAY_MS * first_frac).astype(np.int64)
        after = start + DAY_MS - first
        last_gap = np.floor(after * np.minimum(2 * u_last**2 / count, 0.999)).astype(np.int64)
        last = np.where(lone, first, np.maximum(start + DAY_MS - 1 - last_gap, first))
        return Nodes(start, count, open_, high, low, close, volume, value, first, last)

    # -- splitting -------------------------------------------------------------------------

    def _anchors(self, nodes: Nodes, level: int) -> tuple[I64, I64]:
        """Where in each node's trade sequence (0 .. count - 1) its high and its low trade
        sit: at the open or close when they are the extreme, else at random inside."""
        n = nodes.count
        o, h, lo, c = nodes.open, nodes.high, nodes.low, nodes.close
        u_high, u_low = uniforms(self._keys[level], nodes.start, (_L_POSH, _L_POSL))
        inner_high = 1 + np.floor(u_high * np.maximum(n - 2, 0)).astype(np.int64)
        pos_high = np.where(o == h, 0, np.where(c == h, n - 1, inner_high))
        high_inside = (pos_high > 0) & (pos_high < n - 1)
        slots = np.maximum(np.where(high_inside, n - 3, n - 2), 0)
        inner_low = 1 + np.floor(u_low * slots).astype(np.int64)
        inner_low = inner_low + (high_inside & (inner_low >= pos_high))
        pos_low = np.where(o == lo, 0, np.where(c == lo, n - 1, inner_low))
        return pos_high, pos_low

    def _path(
        self,
        nodes: Nodes,
        level: int,
        anchors: tuple[I64, I64],
        owner: I64,
        index: I64,
        noise: F64 | None = None,
    ) -> I64:
        """Price of trade number ``index`` of node ``owner``: exact at the anchors (open at
        0, close at count - 1, high and low at ``anchors``), else a noisy interpolation
        between the neighbouring anchors, inside [low, high]. ``noise`` is the trade's
        uniform of lane _L_PATH, if the caller has it already."""
        last = nodes.count[owner] - 1
        pos_high, pos_low = anchors[0][owner], anchors[1][owner]
        o, c = nodes.open[owner], nodes.close[owner]
        lo, hi = nodes.low[owner], nodes.high[owner]
        # The nearest anchor at or before ``index`` (i0, p0) and at or after it (i1, p1).
        i0, p0, i1, p1 = np.zeros_like(index), o, last, c
        for pos, price in ((pos_high, hi), (pos_low, lo)):
            below = (pos <= index) & (pos >= i0)
            i0, p0 = np.where(below, pos, i0), np.where(below, price, p0)
            above = (pos >= index) & (pos <= i1)
            i1, p1 = np.where(above, pos, i1), np.where(above, price, p1)
        frac = (index - i0) / np.maximum(i1 - i0, 1)
        if noise is None:
            noise = uniform(self._keys[level], nodes.start[owner] + index, _L_PATH)
        wiggle = (hi - lo) * 0.35 * np.sqrt(np.clip(frac * (1 - frac), 0, None)) * (noise * 2 - 1)
        guess = np.clip(p0 + (p1 - p0) * frac + wiggle, lo, hi)
        snapped = np.clip(self.grid.snap(guess), lo, hi)
        at_end = np.where(index == last, c, snapped)
        result: I64 = np.where(index == i0, p0, np.where(index == i1, p1, at_end))
        return result

    def _amounts(
        self,
        parents: Nodes,
        owner: I64,
        offsets: I64,
        vwap: F64,
        weight: F64,
    ) -> F64:
        """Volumes of the items (children or trades) of each parent: they sum to the
        parent's volume and, at the items' own average prices ``vwap``, to its value."""
        target = parents.value / np.where(parents.volume > 0, parents.volume, 1) * UNIT
        diff = vwap - target[owner]
        below = _segment_sum(np.where(diff < 0, weight * diff, 0.0), offsets)
        above = _segment_sum(np.where(diff > 0, weight * diff, 0.0), offsets)
        ok = (below < 0) & (above > 0)
        scale = np.where(ok, -below / np.where(ok, above, 1.0), 1.0)
        weight = np.where(diff > 0, weight * scale[owner], weight)
        total = _segment_sum(weight, offsets)
        result: F64 = parents.volume[owner] * weight / total[owner]
        return result

    def split(self, parents: Nodes, level: int) -> Nodes:
        """The non-empty children (at ``level``) of ``parents`` (at ``level - 1``)."""
        if len(parents) == 0:
            return Nodes.empty()
        child_ms = LEVEL_MS[level]
        n_par = len(parents)
        key = self._keys[level]
        # Only the children from the one holding the first trade to the one holding the
        # last can trade; a sparse parent has few of them, so only those are generated.
        first_slot = (parents.first - parents.start) // child_ms
        last_slot = (parents.last - parents.start) // child_ms
        span = last_slot - first_slot + 1
        owner = np.repeat(np.arange(n_par), span)
        offsets = np.cumsum(span) - span
        slot = first_slot[owner] + np.arange(len(owner), dtype=np.int64) - offsets[owner]
        start = parents.start[owner] + slot * child_ms

        # Trade counts: the children holding the first and last trades get one each, the
        # rest is shared by random weights (largest remainder, exact in integers).
        lanes = (_L_WEIGHT, _L_XHIGH, _L_XLOW, _L_XH2, _L_XL2, _L_VWAP, _L_VOLUME)
        table = uniforms(key, start, (*lanes, _L_FIRST, _L_LAST))
        u_weight = table[0]
        weight = (65_536 * (0.15 + u_weight * u_weight)).astype(np.int64)
        total_weight = np.add.reduceat(weight, offsets)
        extra = parents.count - 1 - (first_slot != last_slot)
        share = extra[owner] * weight
        quota = share // total_weight[owner]
        remainder = share % total_weight[owner]
        left = extra - np.add.reduceat(quota, offsets)
        order = np.lexsort((-remainder, owner))
        rank = np.empty_like(slot)
        rank[order] = np.arange(len(slot)) - offsets[owner]
        ends = (slot == first_slot[owner]) | (slot == last_slot[owner])
        count = quota + (rank < left[owner]) + ends

        head = np.cumsum(count) - count
        head = head - head[offsets][owner]
        keep = count > 0
        owner, start, count, head = owner[keep], start[keep], count[keep], head[keep]
        slot = slot[keep]
        table = table[:, keep]
        u_xhigh, u_xlow, u_xh2, u_xl2, u_vwap, u_volume, u_first, u_last = table[1:]
        offsets = np.searchsorted(owner, np.arange(n_par))

        # Prices: open and close of each child on the parent's trade path.
        anchors = self._anchors(parents, level - 1)
        pos_high, pos_low = anchors
        tail = head + count - 1
        ends_price = self._path(
            parents, level - 1, anchors, np.append(owner, owner), np.append(head, tail)
        )
        open_, close = ends_price[: len(owner)], ends_price[len(owner) :]
        top, bottom = np.maximum(open_, close), np.minimum(open_, close)
        ph, pl = pos_high[owner], pos_low[owner]
        big_h, big_l = parents.high[owner], parents.low[owner]
        has_high = (head <= ph) & (ph <= tail)
        has_low = (head <= pl) & (pl <= tail)
        high_inner = has_high & (ph > head) & (ph < tail)
        low_inner = has_low & (pl > head) & (pl < tail) & (pl != ph)
        free = np.maximum(count - 2, 0) - high_inner - low_inner
        reach_high = ~has_high & (free >= 1) & (u_xhigh < 0.85)
        free = free - reach_high
        reach_low = ~has_low & (free >= 1) & (u_xlow < 0.85)
        up = self.grid.snap(top + (big_h - top) * 0.5 * u_xh2**2)
        down = self.grid.snap(bottom - (bottom - big_l) * 0.5 * u_xl2**2)
        high = np.where(has_high, big_h, np.where(reach_high, np.clip(up, top, big_h), top))
        low = np.where(has_low, big_l, np.where(reach_low, np.clip(down, big_l, bottom), bottom))

        # Volumes and values: each child's average price strictly inside its range (or its
        # one price), moved toward the parent's extremes if none lies on one side.
        flat = (count == 1) | (high == low)
        vwap = np.where(flat, low.astype(np.float64), low + (high - low) * (0.2 + 0.6 * u_vwap))
        target = (parents.value / parents.volume * UNIT)[owner]
        any_above = np.add.reduceat((vwap > target).astype(np.int64), offsets) > 0
        any_below = np.add.reduceat((vwap < target).astype(np.int64), offsets) > 0
        varied = (parents.high > parents.low)[owner]
        lift = varied & has_high & ~any_above[owner]
        vwap = np.where(lift, (target + big_h) / 2, vwap)
        sink = varied & has_low & ~any_below[owner]
        vwap = np.where(sink, (target + big_l) / 2, vwap)
        only_child = np.diff(np.append(offsets, len(owner))) == 1
        vwap = np.where(only_child[owner], target, vwap)  # a lone child is its parent
        weight_v = count * (0.3 + u_volume)
        volume = self._amounts(parents, owner, offsets, vwap, weight_v)
        value = volume * vwap / UNIT

        # Times of first and last trade inside each child's window.
        end = start + child_ms
        is_first = slot == first_slot[owner]
        is_last = slot == last_slot[owner]
        lo_ms = np.where(is_first, parents.first[owner], start)
        hi_ms = np.where(is_last, parents.last[owner], end - 1)
        lone = count == 1
        first_frac = np.where(lone, u_first, np.minimum(2 * u_first**2 / (count + 1), 0.999))
        free_first = lo_ms + np.floor((hi_ms - lo_ms + 1) * first_frac).astype(np.int64)
        first = np.where(is_first, lo_ms, np.minimum(free_first, hi_ms))
        first = np.where(lone & is_last, hi_ms, first)
        last_frac = np.minimum(2 * u_last**2 / count, 0.999)
        free_last = hi_ms - np.floor((hi_ms - first + 1) * last_frac).astype(np.int64)
        last = np.where(is_last, hi_ms, np.where(lone, first, np.maximum(free_last, first)))
        return Nodes(start, count, open_, high, low, close, volume, value, first, last)

    # -- trades ----------------------------------------------------------------------------

    def trades(self, leaves: Nodes, level: int = LEAF) -> TradeArrays:
        """Every trade of ``leaves`` (nodes of ``level``), in time order."""
        n_leaf = len(leaves)
        count = leaves.count
        total = int(count.sum())
        owner = np.repeat(np.arange(n_leaf), count)
        offsets = np.cumsum(count) - count
        index = np.arange(total, dtype=np.int64) - offsets[owner]
        key = self._keys[level]
        counter = leaves.start[owner] + index
        anchors = self._anchors(leaves, level)
        u_path, u_time, u_volume, u_side = uniforms(
            key, counter, (_L_PATH, _L_TIME, _L_VOLUME, _L_SIDE)
        )
        price = self._path(leaves, level, anchors, owner, index, u_path)

        first, last = leaves.first[owner], leaves.last[owner]
        spread = first + np.floor(u_time * (last - first + 1))
        raw = np.where(index == 0, first, np.where(index == count[owner] - 1, last, spread))
        raw = np.minimum(raw.astype(np.int64), last)
        ms = raw[np.lexsort((raw, owner))]

        weight = 1.0 / (0.02 + u_volume)
        volume = self._amounts(leaves, owner, offsets, price.astype(np.float64), weight)
        rising = np.zeros(total, np.int64)
        rising[1:] = np.sign(np.diff(price))
        rising[index == 0] = 0  # a leaf's first trade must not see another leaf's last
        bid = u_side < 0.5 + 0.3 * rising
        fresh = np.ones(total, np.bool_)
        fresh[1:] = ms[1:] != ms[:-1]
        run_start = np.maximum.accumulate(np.where(fresh, np.arange(total), 0))
        seq = ms * 10_000 + (np.arange(total) - run_start)
        return TradeArrays(ms, price, volume, bid, seq)
