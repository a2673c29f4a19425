"""``Spine.trades(market, start=..., end=...)``: a range from the recording, its holes within
REST's seven days filled from REST (by sequential_id, gapless, each trade once), and what
neither has named in ``meta`` (known gaps, where unrecorded history REST cannot give begins)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SIM_NOW_MS
from recorded_truth import differences, simulated_between

from marketspine import InvalidRequestError, Spine, TradeGap
from marketspine._base.time import DAY_MS, MINUTE_MS
from marketspine._spine.trade_range import rest_trade_horizon
from marketspine._store.recording_store import recording_for
from marketspine.sim import History

MARKET = "KRW-BTC"
T = SIM_NOW_MS


@pytest.fixture(scope="module")
def history() -> History:
    return History(1, markets=30)


async def test_a_recorded_range_with_holes_comes_back_whole(
    fixed_sim: str, tmp_path: Path, history: History
) -> None:
    truth = simulated_between(history, MARKET, T - 20 * MINUTE_MS, T - MINUTE_MS)
    early = [t for t in truth if T - 15 * MINUTE_MS <= t.ms < T - 10 * MINUTE_MS]
    late = [t for t in truth if T - 8 * MINUTE_MS <= t.ms < T - 5 * MINUTE_MS]
    gap = TradeGap(MARKET, early[-1].seq, late[0].seq, early[-1].ms, late[0].ms, "test", T)
    async with Spine(fixed_sim, db=tmp_path / "db.sqlite") as spine:
        recording = recording_for(spine.store)
        await recording.write(early)
        await recording.write(late, gaps=[gap])
        got = await spine.trades(MARKET, start=T - 20 * MINUTE_MS, end=T - MINUTE_MS)
        # recorded ones keep their best quotes; REST's fill the holes before, between, after
        assert differences(list(got), truth) == []
        assert sum(t.best_ask_price is not None for t in got) == len(early) + len(late)
        assert set(got.meta.sources) == {"database", "rest"}
        assert got.meta.gaps == () and got.meta.unserved_before_ms is None
        assert got.meta.upstream_calls >= 3
        # the recorded part alone needs no REST call
        inside = await spine.trades(MARKET, start=early[1].ms, end=early[-1].ms)
        assert [t.seq for t in inside] == [
            t.seq for t in early if early[1].ms <= t.ms < early[-1].ms
        ]
        assert inside.meta.sources == ("database",) and inside.meta.upstream_calls == 0


async def test_what_rest_no_longer_serves_is_named_in_meta(
    fixed_sim: str, tmp_path: Path, history: History
) -> None:
    old = simulated_between(history, MARKET, T - 9 * DAY_MS, T - 9 * DAY_MS + 10 * MINUTE_MS)
    kept = [old[0], old[-1]]
    gap = TradeGap(MARKET, old[0].seq, old[-1].seq, old[0].ms, old[-1].ms, "socket lost", T)
    async with Spine(fixed_sim, db=tmp_path / "db.sqlite") as spine:
        recording = recording_for(spine.store)
        await recording.write(kept, gaps=[gap])
        got = await spine.trades(MARKET, start=T - 10 * DAY_MS, end=T - 9 * DAY_MS + DAY_MS // 2)
        assert list(got) == kept
        assert got.meta.gaps == (gap,)
        assert got.meta.unserved_before_ms == rest_trade_horizon(T)
        with pytest.raises(InvalidRequestError, match=r"start \(\S+\) must be before end"):
            await spine.trades(MARKET, start=T, end=T - 1)
        with pytest.raises(InvalidRequestError, match="end needs a start"):
            await spine.trades(MARKET, end=T)


async def test_an_unrecorded_range_days_ago_is_read_from_rest_by_day(
    fixed_sim: str, tmp_path: Path, history: History
) -> None:
    start, end = T - 3 * DAY_MS - 7 * MINUTE_MS, T - 3 * DAY_MS - 2 * MINUTE_MS
    async with Spine(fixed_sim, db=tmp_path / "db.sqlite") as spine:
        got = await spine.trades(MARKET, start=start, end=end)
    assert differences(list(got), simulated_between(history, MARKET, start, end)) == []
    assert got.meta.sources == ("rest",) and got.meta.upstream_calls <= 3  # no walk from today
