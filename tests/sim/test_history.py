"""The simulator's market history: deterministic trades are the ground truth, and every
candle, ticker and book is consistent with them."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketspine._base.time import DAY_MS, HOUR_MS, MINUTE_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES, Timeframe
from marketspine._upbit.ticks import round_to_tick
from marketspine.errors import UnknownMarketError
from marketspine.sim._gen_store import NodeStore
from marketspine.sim._history import Bar, History, Trade
from marketspine.sim._universe import universe

NOW = parse_time("2026-07-30T07:41:37.123Z")
LIQUID = "KRW-BTC"
SPARSE = ("KRW-AHT", "KRW-META", "BTC-LINK")
MARKETS = (LIQUID, "KRW-XRP", "KRW-SHIB", "USDT-BTC", *SPARSE)
INTRADAY = [tf for tf in TIMEFRAMES.values() if tf.unit in ("second", "minute")]


@pytest.fixture(scope="module")
def history() -> History:
    return History(7)


def bar_of(trades: list[Trade], start_ms: int) -> Bar | None:
    """The aggregate of ``trades`` (ascending), computed independently of the simulator."""
    if not trades:
        return None
    return Bar(
        start_ms=start_ms,
        open=trades[0].price,
        high=max(t.price for t in trades),
        low=min(t.price for t in trades),
        close=trades[-1].price,
        volume=math.fsum(t.volume for t in trades),
        value=math.fsum(t.volume * t.price for t in trades),
        trades=len(trades),
        first_ms=trades[0].ms,
        last_ms=trades[-1].ms,
    )


def merge(bars: list[Bar], start_ms: int) -> Bar:
    """The aggregate of consecutive bars given newest first."""
    ordered = sorted(bars, key=lambda bar: bar.start_ms)
    return Bar(
        start_ms=start_ms,
        open=ordered[0].open,
        high=max(b.high for b in ordered),
        low=min(b.low for b in ordered),
        close=ordered[-1].close,
        volume=math.fsum(b.volume for b in ordered),
        value=math.fsum(b.value for b in ordered),
        trades=sum(b.trades for b in ordered),
        first_ms=ordered[0].first_ms,
        last_ms=ordered[-1].last_ms,
    )


def assert_same_bar(actual: Bar | None, expected: Bar | None) -> None:
    """Prices, counts and times exactly; volume and value within float rounding."""
    assert (actual is None) == (expected is None), (actual, expected)
    if actual is None or expected is None:
        return
    exact = ("start_ms", "open", "high", "low", "close", "trades", "first_ms", "last_ms")
    for name in exact:
        assert getattr(actual, name) == getattr(expected, name), (name, actual, expected)
    assert actual.volume == pytest.approx(expected.volume, rel=1e-9)
    assert actual.value == pytest.approx(expected.value, rel=1e-9)


def window_bars(history: History, code: str, tf: Timeframe, start: int, end: int) -> list[Bar]:
    """The closed candles of ``tf`` whose windows start inside [start, end)."""
    count = tf.count_windows(start, end)
    bars = history.candles(code, tf, before_ms=end, now_ms=NOW, count=count)
    return [bar for bar in bars if bar.start_ms >= start]


# -- determinism -------------------------------------------------------------------------


def test_same_seed_gives_identical_history_whatever_the_query_order() -> None:
    first, second = History(11), History(11)
    one_hour = TIMEFRAMES["1h"]
    a = first.candles(LIQUID, one_hour, before_ms=NOW, now_ms=NOW, count=50)
    # The second history warms its caches elsewhere and in another order first.
    second.trades(LIQUID, before_ms=NOW - 30 * DAY_MS, count=500)
    second.candles(LIQUID, TIMEFRAMES["1m"], before_ms=NOW - HOUR_MS, now_ms=NOW, count=200)
    second.ticker("KRW-AHT", NOW)
    b = second.candles(LIQUID, one_hour, before_ms=NOW, now_ms=NOW, count=50)
    assert a == b
    for code in ("KRW-AHT", LIQUID):
        assert second.trades(code, before_ms=NOW, count=300) == first.trades(
            code, before_ms=NOW, count=300
        )
        assert second.orderbook(code, NOW) == first.orderbook(code, NOW)
        assert second.ticker(code, NOW) == first.ticker(code, NOW)
    second.clear_caches()
    assert second.candles(LIQUID, one_hour, before_ms=NOW, now_ms=NOW, count=50) == a


def test_different_seed_gives_different_prices() -> None:
    day = TIMEFRAMES["1d"]
    a = History(1).candles(LIQUID, day, before_ms=NOW, now_ms=NOW, count=30)
    b = History(2).candles(LIQUID, day, before_ms=NOW, now_ms=NOW, count=30)
    assert [bar.close for bar in a] != [bar.close for bar in b]


def test_market_history_does_not_depend_on_universe_size() -> None:
    small, large = History(3, markets=5), History(3, markets=250)
    assert len(large.markets) == 250
    for code in (m.code for m in small.markets):
        assert small.trades(code, before_ms=NOW, count=20) == large.trades(
            code, before_ms=NOW, count=20
        )


def test_batch_composition_does_not_change_nodes(history: History) -> None:
    """A minute computed alone equals the same minute computed with a whole day."""
    fresh = History(7)
    minute = NOW // MINUTE_MS * MINUTE_MS - 5 * MINUTE_MS
    alone = fresh.trades_between(LIQUID, minute, minute + MINUTE_MS)
    history.trades_between(LIQUID, minute - 2 * HOUR_MS, minute + 2 * HOUR_MS)
    assert history.trades_between(LIQUID, minute, minute + MINUTE_MS) == alone
    assert alone


# -- consistency -------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from(MARKETS),
    tf=st.sampled_from(INTRADAY),
    moment=st.integers(parse_time("2025-01-01"), NOW - DAY_MS),
)
def test_intraday_candle_is_the_aggregate_of_its_trades(
    history: History, code: str, tf: Timeframe, moment: int
) -> None:
    if tf.fixed_ms is not None and tf.fixed_ms > HOUR_MS and code == LIQUID:
        tf = TIMEFRAMES["1h"]  # a 4h window of KRW-BTC is ~15k trades: keep the test fast
    bars = history.candles(code, tf, before_ms=moment, now_ms=NOW, count=3)
    assert bars, "every market here trades at least every few days"
    for bar in bars:
        end = tf.next_start(bar.start_ms)
        trades = history.trades_between(code, bar.start_ms, end)
        assert_same_bar(bar, bar_of(trades, bar.start_ms))
        assert_same_bar(history.aggregate(code, bar.start_ms, end), bar)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.sampled_from(MARKETS), moment=st.integers(parse_time("2024-06-01"), NOW))
def test_coarser_candles_are_aggregates_of_finer_ones(
    history: History, code: str, moment: int
) -> None:
    pairs = (("5m", "1m"), ("15m", "5m"), ("30m", "10m"), ("4h", "1h"), ("1d", "1h"))
    for coarse_name, fine_name in pairs:
        coarse, fine = TIMEFRAMES[coarse_name], TIMEFRAMES[fine_name]
        for bar in history.candles(code, coarse, before_ms=moment, now_ms=NOW, count=2):
            end = coarse.next_start(bar.start_ms)
            parts = window_bars(history, code, fine, bar.start_ms, end)
            assert_same_bar(bar, merge(parts, bar.start_ms))


@pytest.mark.parametrize("code", [LIQUID, "KRW-META"])
@pytest.mark.parametrize("name", ["1w", "1M", "1y"])
def test_long_candles_are_aggregates_of_days(history: History, code: str, name: str) -> None:
    tf, day = TIMEFRAMES[name], TIMEFRAMES["1d"]
    bars = history.candles(code, tf, before_ms=NOW, now_ms=NOW, count=3)
    assert len(bars) == 3
    for bar in bars:
        end = tf.next_start(bar.start_ms)
        days = window_bars(history, code, day, bar.start_ms, end)
        assert_same_bar(bar, merge(days, bar.start_ms))


def test_second_candles_are_aggregates_of_trades(history: History) -> None:
    second = TIMEFRAMES["1s"]
    for code in (LIQUID, "KRW-META"):
        bars = history.candles(code, second, before_ms=NOW, now_ms=NOW, count=20)
        assert len(bars) == 20
        for bar in bars:
            trades = history.trades_between(code, bar.start_ms, bar.start_ms + 1000)
            assert_same_bar(bar, bar_of(trades, bar.start_ms))


def test_paging_by_oldest_start_continues_without_gaps_or_overlap(history: History) -> None:
    for code in (LIQUID, "KRW-AHT"):
        for name in ("1m", "1h", "1d"):
            tf = TIMEFRAMES[name]
            whole = history.candles(code, tf, before_ms=NOW, now_ms=NOW, count=300)
            first = history.candles(code, tf, before_ms=NOW, now_ms=NOW, count=150)
            oldest = first[-1].start_ms
            second = history.candles(code, tf, before_ms=oldest, now_ms=NOW, count=150)
            assert first + second == whole


# -- sparse markets, listing, grid -------------------------------------------------------


@pytest.mark.parametrize("code", SPARSE)
def test_sparse_market_has_no_candle_for_empty_windows(history: History, code: str) -> None:
    minute = TIMEFRAMES["1m"]
    bars = history.candles(code, minute, before_ms=NOW, now_ms=NOW, count=200)
    starts = [bar.start_ms for bar in bars]
    gaps = [newer - older for newer, older in itertools.pairwise(starts)]
    assert max(gaps) > 3 * HOUR_MS, "a market trading every few hours leaves hours empty"
    assert sorted(gaps)[len(gaps) // 2] > 10 * MINUTE_MS
    assert all(bar.trades > 0 and bar.volume > 0 for bar in bars)
    newest, older = starts[0], starts[1]
    for empty_start in range(older + MINUTE_MS, newest, MINUTE_MS * 7):
        assert history.aggregate(code, empty_start, empty_start + MINUTE_MS) is None


def test_nothing_exists_before_listing(history: History) -> None:
    for market in history.markets[:8] + history.markets[-6:]:
        code, listed = market.code, market.listed_ms
        assert history.candles(code, TIMEFRAMES["1d"], before_ms=listed, now_ms=NOW, count=5) == []
        assert history.trades(code, before_ms=listed, count=5) == []
        assert history.last_trade(code, listed - 1) is None
        assert history.ticker(code, listed - 1) is None
        assert history.aggregate(code, listed - 30 * DAY_MS, listed) is None
        assert history.prev_close(code, listed) is None
        first = history.candles(code, TIMEFRAMES["1y"], before_ms=NOW, now_ms=NOW, count=20)
        if first:
            assert first[-1].first_ms >= listed


def test_krw_btc_history_starts_on_2017_09_25(history: History) -> None:
    days = TIMEFRAMES["1d"]
    listing = parse_time("2017-09-25")
    first = history.candles(LIQUID, days, before_ms=listing + DAY_MS, now_ms=NOW, count=5)
    assert [bar.start_ms for bar in first] == [listing]


@pytest.mark.parametrize("code", MARKETS)
def test_prices_are_on_the_tick_grid(history: History, code: str) -> None:
    market = history.market(code)
    assert market is not None
    trades = history.trades(code, before_ms=NOW, count=200)
    bars = history.candles(code, TIMEFRAMES["1d"], before_ms=NOW, now_ms=NOW, count=60)
    prices = [t.price for t in trades] + [p for b in bars for p in (b.open, b.high, b.low, b.close)]
    book = history.orderbook(code, NOW)
    prices += [p for p, _ in book.asks + book.bids]
    for price in prices:
        assert price > 0
        assert round_to_tick(market.quote, price) == price, (code, price)


def test_price_levels_are_realistic(history: History) -> None:
    expected = {"KRW-BTC": 1e8, "BTC-ETH": 0.035, "USDT-BTC": 7e4, "KRW-SHIB": 0.019}
    for code, level in expected.items():
        last = history.last_trade(code, parse_time("2026-11-01"))
        assert last is not None
        assert level / 3 < last.price < level * 3, (code, last.price)


# -- trades --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [LIQUID, "KRW-META"])
def test_sequential_ids_are_unique_and_ascend_with_time(history: History, code: str) -> None:
    trades = history.trades(code, before_ms=NOW, count=700)
    assert len(trades) == 700
    assert all(t.ms < NOW for t in trades)
    oldest_first = trades[::-1]
    seqs = [t.seq for t in oldest_first]
    assert seqs == sorted(set(seqs))
    assert [t.ms for t in oldest_first] == sorted(t.ms for t in trades)
    for trade in trades:
        assert trade.seq // 10_000 == trade.ms
        assert trade.seq > 2**53
        assert trade.side in ("BID", "ASK")
        assert trade.volume > 0


@pytest.mark.parametrize("code", [LIQUID, "KRW-AHT"])
def test_trades_before_seq_continues_a_page(history: History, code: str) -> None:
    whole = history.trades(code, before_ms=NOW, count=120)
    page = history.trades(code, before_ms=NOW, count=50)
    rest = history.trades_before_seq(code, page[-1].seq, 70)
    assert page + rest == whole
    # A cursor in the middle of a run of equal milliseconds still continues exactly.
    for i in range(1, len(whole)):
        if whole[i].ms == whole[i - 1].ms:
            assert history.trades_before_seq(code, whole[i - 1].seq, 3) == whole[i : i + 3]


def test_trades_between_matches_trades_pages(history: History) -> None:
    for code in (LIQUID, "KRW-META"):
        page = history.trades(code, before_ms=NOW, count=40)
        start, end = page[-1].ms, page[0].ms + 1
        between = history.trades_between(code, start, end)
        assert between[-40:] == page[::-1]
        assert all(start <= t.ms < end for t in between)


def test_streamed_slices_join_up_to_the_same_trades(history: History) -> None:
    for code in (LIQUID, "KRW-XRP"):
        start = NOW - 3 * MINUTE_MS
        cuts = [*range(start, NOW, 7_919), NOW]
        streamed = [
            trade
            for begin, end in itertools.pairwise(cuts)
            for trade in history.trades_between(code, begin, end)
        ]
        assert streamed == history.trades_between(code, start, NOW)
        assert streamed[::-1] == history.trades(code, before_ms=NOW, count=len(streamed))
        assert len(streamed) > 20


# -- now: forming candle, ticker, book ---------------------------------------------------


def test_forming_candle_holds_only_trades_up_to_now(history: History) -> None:
    for code in (LIQUID, "KRW-XRP"):
        for name in ("1m", "1h", "1d"):
            tf = TIMEFRAMES[name]
            newest = history.candles(code, tf, before_ms=NOW + 1, now_ms=NOW, count=1)[0]
            assert newest.start_ms == tf.floor(NOW)
            assert newest.last_ms <= NOW
            assert_same_bar(newest, history.aggregate(code, newest.start_ms, NOW + 1))
            later = NOW + 20_000
            grown = history.candles(code, tf, before_ms=later + 1, now_ms=later, count=1)[0]
            if grown.start_ms == newest.start_ms:
                assert grown.trades > newest.trades
    # Asking "before" a future time does not reveal trades after now.
    future = history.candles(LIQUID, TIMEFRAMES["1m"], before_ms=NOW + HOUR_MS, now_ms=NOW, count=1)
    assert future[0].start_ms == TIMEFRAMES["1m"].floor(NOW)


@pytest.mark.parametrize("code", [LIQUID, "KRW-AHT", "KRW-META", "USDT-BTC"])
def test_ticker_agrees_with_candles_and_trades(history: History, code: str) -> None:
    state = history.ticker(code, NOW)
    assert state is not None
    assert state.last == history.last_trade(code, NOW)
    assert state.last.ms <= state.ms <= NOW
    days = history.candles(code, TIMEFRAMES["1d"], before_ms=NOW + 1, now_ms=NOW, count=2)
    day_start = NOW // DAY_MS * DAY_MS
    today = days[0] if days[0].start_ms == day_start else None
    yesterday = next(d for d in days if d.start_ms < day_start)
    assert state.prev_close == yesterday.close == history.prev_close(code, NOW)
    if today is None:
        assert state.day_open == state.day_high == state.day_low == state.prev_close
        assert state.acc_volume == 0
    else:
        assert (state.day_open, state.day_high, state.day_low) == (
            today.open,
            today.high,
            today.low,
        )
        assert state.acc_volume == pytest.approx(today.volume, rel=1e-9)
        assert state.acc_value == pytest.approx(today.value, rel=1e-9)
    assert state.acc_ask_volume + state.acc_bid_volume == pytest.approx(state.acc_volume)
    assert min(state.acc_ask_volume, state.acc_bid_volume) >= 0
    rolling = history.aggregate(code, NOW + 1 - DAY_MS, NOW + 1)
    assert state.acc_volume_24h == pytest.approx(rolling.volume if rolling else 0.0, rel=1e-9)
    assert state.high_52w >= state.day_high and state.low_52w <= state.day_low
    year = history.candles(code, TIMEFRAMES["1d"], before_ms=NOW + 1, now_ms=NOW, count=365)
    year = [d for d in year if d.start_ms >= day_start - 364 * DAY_MS]
    assert state.high_52w == max(d.high for d in year)
    assert state.low_52w == min(d.low for d in year)
    assert len(state.high_52w_date) == 10 and state.high_52w_date[4] == "-"


@pytest.mark.parametrize("code", [LIQUID, "KRW-SHIB", "KRW-META", "BTC-ETH"])
def test_orderbook_straddles_the_last_trade(history: History, code: str) -> None:
    book = history.orderbook(code, NOW)
    last = history.last_trade(code, NOW)
    assert last is not None
    assert book.ms <= NOW and book.ms % 100 == 0
    asks = [p for p, _ in book.asks]
    bids = [p for p, _ in book.bids]
    assert 1 <= len(asks) <= 30 and 1 <= len(bids) <= 30
    assert asks == sorted(asks) and len(set(asks)) == len(asks)
    assert bids == sorted(bids, reverse=True) and len(set(bids)) == len(bids)
    assert bids[0] <= last.price <= asks[0] and bids[0] < asks[0]
    assert all(size > 0 for _, size in book.asks + book.bids)
    assert history.orderbook(code, NOW) == book
    top = history.orderbook(code, NOW, 5)
    assert (top.asks, top.bids) == (book.asks[:5], book.bids[:5])
    if code == LIQUID:
        assert len(asks) == 30
        assert history.orderbook(code, NOW + 100) != book


# -- markets -------------------------------------------------------------------------------


def test_unknown_market_raises_everywhere(history: History) -> None:
    calls: list[Callable[[], object]] = [
        lambda: history.candles("KRW-NOPE", TIMEFRAMES["1m"], before_ms=NOW, now_ms=NOW, count=1),
        lambda: history.aggregate("KRW-NOPE", 0, NOW),
        lambda: history.trades("KRW-NOPE", before_ms=NOW, count=1),
        lambda: history.trades_before_seq("KRW-NOPE", NOW * 10_000, 1),
        lambda: history.trades_between("KRW-NOPE", NOW - 1000, NOW),
        lambda: history.last_trade("KRW-NOPE", NOW),
        lambda: history.prev_close("KRW-NOPE", NOW),
        lambda: history.ticker("KRW-NOPE", NOW),
        lambda: history.orderbook("krw-btc", NOW),
    ]
    for call in calls:
        with pytest.raises(UnknownMarketError):
            call()
    assert history.market("krw-btc") is None
    assert history.market(LIQUID) is not None


# -- memory ----------------------------------------------------------------------------------


def test_walking_far_back_keeps_caches_bounded() -> None:
    budget = 256 << 10
    small = History(7, cache_bytes=budget)
    reference = History(7)
    minute = TIMEFRAMES["1m"]
    before = NOW
    for _ in range(60):  # 60 pages of 200 minutes: about eight days of KRW-BTC minutes
        bars = small.candles(LIQUID, minute, before_ms=before, now_ms=NOW, count=200)
        before = bars[-1].start_ms
        stats = small.cache_stats()
        assert all(size <= budget for name, size in stats.items() if name.endswith("_bytes"))
    assert before < NOW - 7 * DAY_MS
    assert small.cache_stats()["level3"] < 7, "old blocks were evicted"
    # Eviction changes speed only: answers equal those of a history that evicted nothing.
    for tf in (minute, TIMEFRAMES["1h"]):
        assert small.candles(LIQUID, tf, before_ms=NOW, now_ms=NOW, count=100) == (
            reference.candles(LIQUID, tf, before_ms=NOW, now_ms=NOW, count=100)
        )


@pytest.mark.parametrize("code", [LIQUID, *SPARSE])
def test_a_page_reaches_back_just_as_many_days_as_the_days_counts_allow(code: str) -> None:
    """``days_back`` sizes a cold page's batch of hours and minutes from the day summaries:
    its days may hold the windows wanted (at most ``per_day`` a day, one per trade), and
    a day fewer would not."""
    store = NodeStore(7, universe("kr", 30), 32 << 20)
    gen = store.gen(code)
    end_day = NOW // DAY_MS + 1
    for want, per_day, newest in ((200, 1440, 461), (1000, 24, None), (50, 1 << 62, None)):
        first = store.days_back(gen, end_day, want, per_day, newest)
        assert gen.listed_day <= first < end_day
        held = {
            start // DAY_MS: min(count, per_day)
            for start, count in zip(
                store.nodes(gen, 0, first, end_day).start.tolist(),
                store.nodes(gen, 0, first, end_day).count.tolist(),
                strict=True,
            )
        }
        if newest is not None and end_day - 1 in held:
            held[end_day - 1] = min(held[end_day - 1], newest)
        assert sum(held.values()) >= want or first == gen.listed_day, (want, first)
        assert sum(n for day, n in held.items() if day > first) < want, (want, first)


def test_history_is_pinned_across_machines_and_restarts() -> None:
    """A digest of a sample of history. Generation uses only integer hashing and IEEE
    +, -, *, /, sqrt, so every machine computes these bits; if this fails after a
    deliberate change to the generator, every recorded history changes too: update it."""
    at = parse_time("2025-03-14T15:09:26.535Z")
    fresh = History(42)
    sample = [
        fresh.trades("KRW-BTC", before_ms=at, count=50),
        fresh.candles("KRW-META", TIMEFRAMES["1d"], before_ms=at, now_ms=at, count=30),
        fresh.candles("KRW-SHIB", TIMEFRAMES["5m"], before_ms=at, now_ms=at, count=30),
        fresh.orderbook("BTC-ETH", at),
        fresh.ticker("KRW-XRP", at),
    ]
    digest = hashlib.sha256(repr(sample).encode()).hexdigest()
    assert digest == "2cc555c04106bad0fabcdab330d241d10735778b56bf39efb27b17e1d90ef9ee"
