"""The simulator's markets: a realistic default universe that scales and mimics the regions."""

from __future__ import annotations

import pytest

from marketspine._base.time import DAY_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES
from marketspine._upbit.ticks import round_to_tick, tick_size
from marketspine.errors import InvalidRequestError
from marketspine.sim._history import History
from marketspine.sim._universe import CAUTION_FLAGS, REGION_QUOTES, universe

NOW = parse_time("2026-07-30T07:41:37.123Z")


def test_default_universe_spans_krw_btc_usdt_and_liquidity_levels() -> None:
    markets = universe("kr", 30)
    assert len(markets) == 30
    assert len({m.code for m in markets}) == 30
    assert {m.quote for m in markets} == {"KRW", "BTC", "USDT"}
    for market in markets:
        assert market.code == f"{market.quote}-{market.base}"
        assert market.code == market.code.upper()
    rates = [m.trades_per_day for m in markets]
    assert max(rates) >= 80_000  # about one trade a second
    assert min(rates) <= 8  # one trade every few hours
    btc = markets[0]
    assert btc.code == "KRW-BTC" and btc.listed_ms == parse_time("2017-09-25")
    listings = sorted({m.listed_ms for m in markets})
    assert len(listings) > 10
    assert listings[-1] > parse_time("2026-10-01")  # some listed only weeks ago
    small = [m for m in markets if m.quote == "KRW" and m.ref_price < 500]
    # Small KRW coins sit in several of the small tick bands (0.001, 0.01, 0.1, 1 KRW, ...).
    assert len({tick_size("KRW", m.ref_price) for m in small}) >= 4


def test_markets_carry_warning_and_caution_flags() -> None:
    markets = universe("kr", 30)
    assert any(m.warning for m in markets)
    assert not all(m.warning for m in markets)
    for market in markets:
        assert set(market.caution) == set(CAUTION_FLAGS)
        assert market.market_warning == ("CAUTION" if market.warning else "NONE")
    assert any(any(m.caution.values()) for m in markets)


@pytest.mark.parametrize("region", ["kr", "sg", "id", "th"])
def test_regions_quote_their_fiat_btc_and_usdt(region: str) -> None:
    markets = universe(region, 30)
    assert {m.quote for m in markets} == set(REGION_QUOTES[region])
    if region == "id":
        assert all(m.korean_name is None for m in markets)
    else:
        assert all(m.korean_name for m in markets)
    history = History(5, region=region, markets=30)
    fiat = REGION_QUOTES[region][0]
    code = f"{fiat}-BTC"
    assert history.market(code) is not None
    bars = history.candles(code, TIMEFRAMES["1h"], before_ms=NOW, now_ms=NOW, count=24)
    assert len(bars) == 24
    for bar in bars:
        for price in (bar.open, bar.high, bar.low, bar.close):
            assert round_to_tick(fiat, price) == price


def test_universe_grows_to_any_size_with_unique_generated_markets() -> None:
    markets = universe("kr", 250)
    assert len({m.code for m in markets}) == 250
    assert universe("kr", 250)[:30] == universe("kr", 30)
    assert [m.code for m in universe("kr", 5)] == [m.code for m in markets[:5]]
    history = History(1, markets=250)
    for market in markets[30::40]:
        assert market.listed_ms % DAY_MS == 0
        bars = history.candles(market.code, TIMEFRAMES["1d"], before_ms=NOW, now_ms=NOW, count=5)
        if market.listed_ms < NOW - 30 * DAY_MS:
            assert bars, market.code


def test_bad_region_or_size_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="region"):
        universe("us", 30)
    with pytest.raises(InvalidRequestError, match="at least 1"):
        universe("kr", 0)
