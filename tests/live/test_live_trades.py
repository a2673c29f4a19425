"""The live state's recent trades per market: ascending by (ms, seq), each sequential id at
most once, the newest ``trades_per_market`` kept — checked against a plain model (a sorted
list and a set of ids, what the live state held before it dropped its per-market sets)."""

from __future__ import annotations

import random

from marketspine._base.memory import MemoryBudget
from marketspine._live.state import LiveState
from marketspine.records import Trade

T0 = 1_700_000_000_000


def trade(seq: int, ms: int, market: str = "KRW-BTC") -> Trade:
    return Trade(market, ms, 100.0 + seq % 7, 0.5, "BID", seq, 100.0, 0.0)


class Model:
    """What the live state must hold: the old list + set, written the obvious way."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.rows: list[Trade] = []
        self.ids: set[int] = set()

    def add(self, t: Trade) -> None:
        if t.seq in self.ids:
            return
        self.rows.append(t)
        self.rows.sort(key=lambda r: (r.ms, r.seq))
        self.ids.add(t.seq)
        if len(self.rows) > self.cap:
            self.ids.discard(self.rows.pop(0).seq)


def test_random_arrivals_match_the_model() -> None:
    rng = random.Random(5)
    live = LiveState(clock=lambda: 0.0, trades_per_market=50, budget=MemoryBudget(2**30))
    model = Model(50)
    seq = 1_000
    sent: list[Trade] = []
    for _ in range(3_000):
        roll = rng.random()
        if roll < 0.7 or not sent:  # the next trade
            seq += rng.randint(1, 3)
            t = trade(seq, T0 + seq * 10)
        elif roll < 0.85:  # a replay (reconnect snapshot, REST fill overlap)
            t = rng.choice(sent[-80:])
        else:  # late: a lower id than the newest, inside or before the window held
            t = trade(seq - rng.randint(1, 120) * 2 - 1, T0 + seq * 10 - rng.randint(1, 900))
        sent.append(t)
        live.apply(t)
        model.add(t)
        assert live.trade_count("KRW-BTC") == len(model.rows)
    assert live.trades("KRW-BTC", 50) == model.rows[::-1]
    assert live.trades("KRW-BTC", 7) == model.rows[::-1][:7]
    assert live.trades("KRW-BTC", 0) == []


def test_a_replayed_trade_is_dropped_and_a_late_one_takes_its_place_in_order() -> None:
    live = LiveState(clock=lambda: 0.0, budget=MemoryBudget(2**30))
    for seq in (10, 20, 30):
        live.apply(trade(seq, T0 + seq))
    live.apply(trade(20, T0 + 20))  # replayed
    live.apply(trade(25, T0 + 25))  # late, between two held
    live.apply(trade(30, T0 + 30))  # replayed, the newest
    assert [t.seq for t in live.trades("KRW-BTC", 10)] == [30, 25, 20, 10]
    assert live.statistics().trades == 4


def test_a_market_evicted_by_the_budget_starts_afresh() -> None:
    budget = MemoryBudget(20_000)
    live = LiveState(clock=lambda: 0.0, budget=budget)
    for seq in range(1, 40):
        live.apply(trade(seq, T0 + seq, "KRW-BTC"))
    for seq in range(1, 200):  # another market trades later and pushes KRW-BTC out
        live.apply(trade(seq, T0 + seq, "KRW-ETH"))
    assert live.trade_count("KRW-BTC") == 0
    live.apply(trade(5, T0 + 5, "KRW-BTC"))  # held before, forgotten with the market
    assert [t.seq for t in live.trades("KRW-BTC", 10)] == [5]
    assert budget.used_bytes <= budget.limit_bytes
