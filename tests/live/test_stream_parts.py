"""The WebSocket client's pure parts: subscription set, message pacing, backoff, and the
per-consumer queue (latest-wins, overflow). No sockets here."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from marketspine._live.listener import Fanout, Gap, Health, Listener, Overflow
from marketspine._live.stream import Backoff, Stream
from marketspine._live.subscriptions import KINDS, MessagePacer, SubscriptionSet, normalize_kind
from marketspine.errors import InvalidRequestError
from marketspine.records import Candle, Orderbook, OrderbookUnit, Ticker, Trade

URL = "ws://127.0.0.1:9/websocket/v1"


def trade(seq: int, market: str = "KRW-BTC") -> Trade:
    return Trade(market, 1_700_000_000_000 + seq, 100.0 + seq, 0.5, "BID", seq, 100.0, 1.0)


def ticker(price: float, market: str = "KRW-BTC") -> Ticker:
    return Ticker(
        market, 1, 1, price, 1.0, 2.0, 0.5, 1.0, "RISE", 0.1, 0.1, 1.0, 2.0, 3.0, 4.0, 5.0,
        6.0, "2026-01-01", 0.1, "2025-06-01",
    )  # fmt: skip


def book(size: float, market: str = "KRW-BTC") -> Orderbook:
    return Orderbook(market, 1, size, size, (OrderbookUnit(2.0, size, 1.0, size),), 0.0)


# -- subscription set --------------------------------------------------------------------


def test_request_message_carries_every_kind_and_code_whole() -> None:
    subs = SubscriptionSet()
    assert subs.add("ticker", ["KRW-BTC"])
    assert subs.add("ticker", ["krw-eth"])  # upper-cased: Upbit ignores lower-case codes
    assert subs.add("trade", ["KRW-XRP"])
    assert subs.add("candle.1h", ["KRW-BTC"])
    message = json.loads(subs.request_message("t-1"))
    assert message[0] == {"ticket": "t-1"}
    assert message[-1] == {"format": "DEFAULT"}
    assert message[1:-1] == [
        {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]},
        {"type": "trade", "codes": ["KRW-XRP"]},
        {"type": "candle.60m", "codes": ["KRW-BTC"]},
    ]
    assert len(subs) == 4


def test_changes_report_whether_anything_changed() -> None:
    subs = SubscriptionSet()
    assert subs.add("trade", ["KRW-BTC", "KRW-ETH"])
    version = subs.version
    assert not subs.add("trade", ["KRW-BTC"])
    assert not subs.remove("ticker", ["KRW-BTC"])
    assert subs.version == version
    assert subs.remove("trade", ["KRW-BTC"])
    assert subs.markets("trade") == {"KRW-ETH"}
    assert subs.remove("trade", ["KRW-ETH"])
    assert not subs
    with pytest.raises(InvalidRequestError, match="empty subscription"):
        subs.request_message("t")


def test_orderbook_depth_is_a_code_suffix_and_a_change() -> None:
    subs = SubscriptionSet()
    assert subs.add("orderbook", ["KRW-BTC", "KRW-ETH"], depth=5)
    assert subs.add("orderbook", ["KRW-XRP"])
    assert not subs.add("orderbook", ["KRW-BTC"])  # keeps its depth
    assert not subs.add("orderbook", ["KRW-BTC"], depth=5)
    message = json.loads(subs.request_message("t"))
    assert message[1] == {"type": "orderbook", "codes": ["KRW-BTC.5", "KRW-ETH.5", "KRW-XRP"]}
    assert subs.add("orderbook", ["KRW-ETH"], depth=30)  # back to full depth: re-send
    assert subs.depth("KRW-ETH") == 30 and subs.depth("krw-btc") == 5
    assert subs.remove("orderbook", ["KRW-BTC"])
    assert subs.add("orderbook", ["KRW-BTC"])  # a re-subscription starts at full depth
    assert json.loads(subs.request_message("t"))[1]["codes"] == ["KRW-BTC", "KRW-ETH", "KRW-XRP"]
    assert subs.markets("orderbook") == {"KRW-BTC", "KRW-ETH", "KRW-XRP"}


@pytest.mark.parametrize(
    ("kind", "depth", "complaint"),
    [("orderbook", 20, "accepted are 1, 5, 15, 30"), ("ticker", 5, "orderbook streams")],
)
def test_bad_depths_are_rejected(kind: str, depth: int, complaint: str) -> None:
    subs = SubscriptionSet()
    with pytest.raises(InvalidRequestError, match=complaint):
        subs.add(kind, ["KRW-BTC"], depth=depth)
    assert not subs


@pytest.mark.parametrize("bad", ["nope", "candle.1d", "candle.2m", "Ticker"])
def test_unknown_kinds_are_rejected_with_the_accepted_list(bad: str) -> None:
    with pytest.raises(InvalidRequestError, match="accepted are ticker, trade"):
        normalize_kind(bad)


def test_candle_aliases_map_to_upbit_types() -> None:
    assert normalize_kind("candle.4h") == "candle.240m"
    assert normalize_kind("candle.240m") == "candle.240m"
    assert all(normalize_kind(kind) == kind for kind in KINDS)


@pytest.mark.parametrize("bad", ["BTC", "KRW_BTC", "", "KRW-BTC.5"])
def test_malformed_market_codes_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidRequestError, match="expected QUOTE-BASE"):
        SubscriptionSet().add("trade", [bad])


# -- message pacing ----------------------------------------------------------------------


def test_pacer_keeps_any_second_to_five_and_any_minute_to_hundred() -> None:
    pacer = MessagePacer(margin=0.0)
    now, sent = 0.0, list[float]()
    while len(sent) < 130:
        now += pacer.delay(now)
        pacer.record(now)
        sent.append(now)
    for i, at in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < at + 1.0) <= 5
        assert sum(1 for t in sent[i:] if t < at + 60.0) <= 100
    # And it is not slower than it needs to be: the first five go at once.
    assert sent[:5] == [0.0] * 5


# -- backoff -----------------------------------------------------------------------------


def test_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, cap=8.0, jitter=0.5)
    ceilings = [backoff.delay(n, 0.0) for n in range(1, 10)]
    assert ceilings[0] == backoff.initial
    assert all(b == min(backoff.cap, a * backoff.factor) for a, b in itertools.pairwise(ceilings))
    assert max(ceilings) == backoff.cap
    # Jitter only ever shortens a delay, by at most the jitter share.
    for n, ceiling in enumerate(ceilings, start=1):
        assert backoff.delay(n, 0.999) >= ceiling * (1 - backoff.jitter)
        assert backoff.delay(n, 0.999) < ceiling


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"factor": 0.5}, {"cap": 0.1}, {"jitter": 1.5}])
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidRequestError):
        Backoff(**kwargs)


# -- listener queues ---------------------------------------------------------------------


async def test_latest_wins_keeps_only_the_newest_ticker_and_book_per_market() -> None:
    stream = Stream(URL)
    async with stream.listen(maxsize=10) as events:
        for price in (1.0, 2.0, 3.0):
            events.offer(ticker(price), "ticker", "KRW-BTC")
            events.offer(ticker(price * 10, "KRW-ETH"), "ticker", "KRW-ETH")
            events.offer(book(price), "orderbook", "KRW-BTC")
        got = [events.get_nowait() for _ in range(events.qsize())]
    assert got == [ticker(3.0), ticker(30.0, "KRW-ETH"), book(3.0)]
    assert events.dropped == 0


async def test_trade_overflow_drops_the_oldest_and_says_so() -> None:
    stream = Stream(URL)
    trades = [trade(seq) for seq in range(1, 8)]
    async with stream.listen(maxsize=3) as events:
        for t in trades:
            events.offer(t, "trade", t.market)
        got = [await anext(events) for _ in range(4)]
        assert events.get_nowait() is None
    assert got[0] == Overflow("trade", "KRW-BTC", len(trades) - 3)
    assert got[1:] == trades[-3:]
    assert events.dropped == len(trades) - 3
    assert stream.statistics().dropped_per_listener == ()  # unregistered on exit


async def test_candles_are_never_dropped_silently_either() -> None:
    stream = Stream(URL)
    candles = [
        Candle("KRW-BTC", "1m", 60_000 * i, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 60_000 * i)
        for i in range(4)
    ]
    async with stream.listen(maxsize=2) as events:
        for c in candles:
            events.offer(c, "candle.1m", c.market)
        got = [events.get_nowait() for _ in range(3)]
    assert got == [Overflow("candle.1m", "KRW-BTC", 2), *candles[2:]]


async def test_filters_select_kinds_and_markets_but_health_reaches_everyone() -> None:
    fanout = Fanout()
    async with Listener(fanout, {"trade"}, {"KRW-ETH"}, 1000) as events:
        assert events.wants("trade", "KRW-ETH")
        assert not events.wants("trade", "KRW-BTC")
        assert not events.wants("ticker", "KRW-ETH")
        assert events.wants("health", "")
        fanout.publish(Health("reconnecting", "test"), "health", "")
        fanout.publish(Gap("KRW-BTC", 1, 2, 0), "trade", "KRW-BTC")
        fanout.publish(Gap("KRW-ETH", 1, 2, 3), "trade", "KRW-ETH")
        assert fanout.dropped() == (0,)
        got = [events.get_nowait() for _ in range(events.qsize())]
    assert got == [Health("reconnecting", "test"), Gap("KRW-ETH", 1, 2, 3)]
    assert fanout.dropped() == ()  # a closed listener is detached


async def test_a_closed_fanout_ends_its_listeners_and_refuses_new_ones() -> None:
    fanout = Fanout()
    async with Listener(fanout, None, None, 10) as events:
        fanout.publish(trade(1), "trade", "KRW-BTC")
        fanout.close()
        assert fanout.closed
        assert [event async for event in events] == [trade(1)]  # queued events drain first
    async with Listener(fanout, None, None, 10) as late:
        fanout.publish(trade(2), "trade", "KRW-BTC")
        assert [event async for event in late] == []


async def test_a_waiting_consumer_wakes_on_offer_and_ends_on_close() -> None:
    stream = Stream(URL)
    async with stream.listen() as events:
        waiter = asyncio.create_task(anext(events))
        await asyncio.sleep(0)
        assert not waiter.done()
        events.offer(trade(1), "trade", "KRW-BTC")
        assert await asyncio.wait_for(waiter, 1) == trade(1)
        ender = asyncio.create_task(anext(events))
        await asyncio.sleep(0)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(ender, 1)


async def test_iterating_an_unentered_listener_says_how_to_use_it() -> None:
    with pytest.raises(InvalidRequestError, match="async with"):
        await anext(Stream(URL).listen())


def test_constructor_rejects_bad_urls_and_kinds() -> None:
    with pytest.raises(InvalidRequestError, match="invalid WebSocket URL"):
        Stream("http://example.com/websocket/v1")
    with pytest.raises(InvalidRequestError, match="accepted are"):
        Stream(URL).listen({"trades"})
    with pytest.raises(InvalidRequestError, match="maxsize"):
        Stream(URL).listen(maxsize=0)


async def test_listening_on_a_closed_stream_ends_at_once() -> None:
    stream = Stream(URL)
    async with stream:
        pass
    async with stream.listen() as events:
        assert [event async for event in events] == []
