"""The WebSocket feed without sockets: a subscription over the real History, driven by
injected simulated and real times, so every promise is checked tick by tick."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from marketspine._base.time import format_utc
from marketspine._base.timeframes import parse_timeframe
from marketspine._upbit.ws_format import SubscribeRequest, parse_request
from marketspine.sim._feed import Feed
from marketspine.sim._history import History

BTC = "KRW-BTC"


@pytest.fixture(scope="module")
def history() -> History:
    return History(1)


def feed_of(history: History, now_ms: int, *streams: dict[str, Any], fmt: str = "DEFAULT") -> Feed:
    request = parse_request(json.dumps([{"ticket": "t"}, *streams, {"format": fmt}]))
    assert isinstance(request, SubscribeRequest)
    return Feed.from_request(history, request, fmt, now_ms)


def test_trades_over_many_ticks_are_exactly_the_history(history: History, sim_now_ms: int) -> None:
    feed = feed_of(history, sim_now_ms, {"type": "trade", "codes": [BTC]})
    (snapshot,) = feed.tick(sim_now_ms, 0.0)
    assert snapshot["stream_type"] == "SNAPSHOT"
    assert snapshot["sequential_id"] == history.last_trade(BTC, sim_now_ms).seq  # type: ignore[union-attr]
    seen: list[int] = []
    now = sim_now_ms
    for step in (1, 250, 999, 60_000, 3, 7_000):  # uneven steps, from 1 ms to a minute
        now += step
        seen += [m["sequential_id"] for m in feed.tick(now, 0.0)]
    expected = [t.seq for t in history.trades_between(BTC, sim_now_ms + 1, now + 1)]
    assert len(expected) > 10
    assert seen == expected


def test_forming_candle_repeats_at_most_once_a_second_and_closes_final(
    history: History, sim_now_ms: int
) -> None:
    tf = parse_timeframe("1m")
    start = tf.floor(sim_now_ms) + 60_000  # a whole window to walk through
    feed = feed_of(history, start, {"type": "candle.1m", "codes": [BTC]})
    feed.tick(start, 0.0)
    frames: list[tuple[float, dict[str, Any]]] = []
    real = 0.0
    for now in range(start + 2_000, start + 62_000, 2_000):  # every 2 simulated s
        real += 0.25  # four ticks per real second
        frames += [(real, m) for m in feed.tick(now, real)]
    forming = [(r, m) for r, m in frames if m["candle_date_time_utc"] == format_utc(start)]
    assert len(forming) >= 5, "the forming window is re-sent while trades come in"
    times = [r for r, _ in forming]
    # only the final frame, sent as the window closes, may follow sooner
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times[:-1]))
    (closed,) = history.candles(BTC, tf, before_ms=start + 1, now_ms=start + 60_000, count=1)
    final = forming[-1][1]
    assert (final["opening_price"], final["high_price"], final["low_price"]) == (
        closed.open,
        closed.high,
        closed.low,
    )
    assert (final["trade_price"], final["candle_acc_trade_volume"], final["timestamp"]) == (
        closed.close,
        closed.volume,
        closed.last_ms,
    )


def test_orderbook_is_sent_only_when_the_book_changed(history: History, sim_now_ms: int) -> None:
    feed = feed_of(history, sim_now_ms, {"type": "orderbook", "codes": [f"{BTC}.15"]}, fmt="SIMPLE")
    (snapshot,) = feed.tick(sim_now_ms, 0.0)
    assert len(snapshot["obu"]) == 15 and snapshot["st"] == "SNAPSHOT"
    sent = [snapshot["tms"]]
    for now in range(sim_now_ms + 20, sim_now_ms + 2_000, 20):  # five ticks per 100 ms bucket
        sent += [m["tms"] for m in feed.tick(now, 0.0)]
    assert len(sent) == len(set(sent)), "the same book is never sent twice"
    assert len(sent) > 1
    assert sent[-1] == history.orderbook(BTC, sim_now_ms + 1_980).ms


def test_ticker_once_per_batch_with_the_history_ticker(history: History, sim_now_ms: int) -> None:
    feed = feed_of(
        history, sim_now_ms, {"type": "ticker", "codes": [BTC], "is_only_realtime": True}
    )
    assert feed.tick(sim_now_ms, 0.0) == []
    now = sim_now_ms + 30_000
    (ticker,) = feed.tick(now, 0.0)
    state = history.ticker(BTC, now)
    assert state is not None
    assert (ticker["trade_price"], ticker["acc_trade_volume"], ticker["timestamp"]) == (
        state.last.price,
        state.acc_volume,
        state.ms,
    )
    assert ticker["change_price"] == abs(ticker["signed_change_price"])


def test_a_trades_best_quotes_are_the_book_at_it_on_every_connection(
    history: History, sim_now_ms: int
) -> None:
    """best_* depend on the trade alone, not on where a connection's ticks fall: a feed
    stepping every few ms and one taking a minute at once send the same quotes."""
    stream = {"type": "trade", "codes": [BTC], "is_only_realtime": True}
    fine, coarse = feed_of(history, sim_now_ms, stream), feed_of(history, sim_now_ms, stream)
    fine.tick(sim_now_ms, 0.0)
    coarse.tick(sim_now_ms, 0.0)
    stepped = [
        m for now in range(sim_now_ms + 7, sim_now_ms + 60_001, 7) for m in fine.tick(now, 0.0)
    ]
    at_once = coarse.tick(sim_now_ms + 60_000, 0.0)
    assert len(at_once) > 10
    assert stepped == [
        {**m, "timestamp": s["timestamp"]} for m, s in zip(at_once, stepped, strict=True)
    ]
    for message in at_once:
        book = history.orderbook(BTC, message["trade_timestamp"], 1)
        assert (message["best_ask_price"], message["best_ask_size"]) == book.asks[0]
        assert (message["best_bid_price"], message["best_bid_size"]) == book.bids[0]
        assert message["best_bid_price"] < message["best_ask_price"]


def test_ticker_day_volume_by_side_adds_up(history: History, sim_now_ms: int) -> None:
    feed = feed_of(history, sim_now_ms, {"type": "ticker", "codes": [BTC]}, fmt="SIMPLE")
    (snapshot,) = feed.tick(sim_now_ms, 0.0)
    (realtime,) = feed.tick(sim_now_ms + 30_000, 0.0)
    for ticker in (snapshot, realtime):
        assert ticker["aav"] > 0 and ticker["abv"] > 0
        assert ticker["aav"] + ticker["abv"] == pytest.approx(ticker["atv"], rel=1e-12)
        assert ticker["ab"] in ("ASK", "BID") and ticker["ms"] == "ACTIVE"
    assert realtime["ab"] == history.last_trade(BTC, sim_now_ms + 30_000).side  # type: ignore[union-attr]
