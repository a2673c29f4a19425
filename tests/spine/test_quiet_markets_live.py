"""A watched market that does not trade stays live: Upbit's WebSocket is silent when nothing
changes, so while the socket answers its pings the held ticker and book are current, however
old they are, alone and as a follower of a feed shared through Redis. The simulator's clock
stands still here, so no market trades at all after the subscription's snapshot."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from helpers import ManualClock, answer_meta, wait_until
from services import RedisSpace

from marketspine._spine.quotes import Channel
from marketspine._spine.spine import Spine
from marketspine.sim import SimConfig

MARKET = "KRW-BTC"
# The freshness bound asked with: the proof's age, wider than Spine's default 1 s, so a
# loaded machine's stall of the holder's or the pings' loop does not lapse it (a full run
# beside other work once answered from REST after such a stall).
MAX_AGE_S = 3.0
QUIET_S = MAX_AGE_S + 1.0  # what is held is older than the bound: only the proof is fresh


async def answered_live_while_quiet(spine: Spine) -> None:
    """Watch MARKET, ask once (a follower joining a feed that already carries the market
    gets no snapshot: its first answer is REST's, held live from then on), wait until the
    ticker and book held are older than QUIET_S, then ask twenty times: every answer comes
    from the live state, none from REST."""
    await spine.watch(["ticker", "orderbook"], [MARKET])
    await wait_until(lambda: spine._live.epoch() is not None, 20, "the feed proven live")
    first = await spine.ticker(MARKET)
    await spine.orderbook(MARKET)

    def quiet() -> bool:
        ages = [spine._live.age_s(kind, MARKET) for kind in ("ticker", "orderbook")]
        return all(age is not None and age > QUIET_S for age in ages)

    await wait_until(quiet, 20, f"{MARKET} quiet for {QUIET_S} s")
    sent = spine.client.statistics().sent
    before = sent.get("ticker", 0), sent.get("orderbook", 0)
    for _ in range(20):
        ticker = await spine.ticker(MARKET, max_age_s=MAX_AGE_S)
        book = await spine.orderbook(MARKET, max_age_s=MAX_AGE_S)
        assert (ticker.trade_ms, ticker.price) == (first.trade_ms, first.price)
        assert answer_meta(ticker).sources == ("live",), answer_meta(ticker)
        assert answer_meta(book).sources == ("live",), answer_meta(book)
    sent = spine.client.statistics().sent
    assert (sent.get("ticker", 0), sent.get("orderbook", 0)) == before


async def test_a_quiet_watched_market_is_answered_live(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: ManualClock,
    tmp_path: Path,
) -> None:
    with running_sim(SimConfig(seed=7, rate_limit=0), sim_clock) as sim:
        async with Spine(sim, tmp_path / "quiet.db") as spine:
            await answered_live_while_quiet(spine)
            # An unwatched market is not: its answer is REST's (cached for the bound).
            await spine.unwatch(["ticker", "orderbook"], [MARKET])
            ticker = await spine.ticker(MARKET)
            assert answer_meta(ticker).sources == ("rest",)


async def test_a_follower_of_a_shared_feed_answers_a_quiet_market_live(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: ManualClock,
    tmp_path: Path,
    redis_space: RedisSpace,
) -> None:
    with running_sim(SimConfig(seed=7, rate_limit=0), sim_clock) as sim:

        def spine(name: str) -> Spine:
            return Spine(
                sim, tmp_path / f"{name}.db", redis=redis_space.url, redis_prefix=redis_space.prefix
            )

        async with spine("holder") as holder, spine("follower") as follower:
            await holder.watch(["ticker", "orderbook"], [MARKET])
            await holder.ticker(MARKET, channel=Channel.WEBSOCKET_ONLY)
            await answered_live_while_quiet(follower)
            roles = [getattr(s._feed._stream, "role", None) for s in (holder, follower)]
            assert roles == ["holder", "follower"]
