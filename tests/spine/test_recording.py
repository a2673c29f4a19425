"""``record`` against the simulator, in SQLite and PostgreSQL: through WebSocket drops every
trade of the span is stored exactly once with every field the simulator sent, books and
tickers are kept, the last minutes before the first trade are backfilled at LOW priority, and
a second run joins right after the first one's last trade."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from helpers import afternoon_clock, database_alerts
from recorded_truth import differences, simulated_trades

from marketspine import Spine
from marketspine._base.timeframes import TIMEFRAMES
from marketspine._spine.recording import record
from marketspine._spine.verify import verify_recording
from marketspine._store import room
from marketspine._store.recording_store import recording_for
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Trade
from marketspine.sim import History, SimConfig

RunSim = Callable[..., contextlib.AbstractContextManager[str]]
MARKETS = ["KRW-BTC", "KRW-ETH"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "rec.sqlite")
    return str(request.getfixturevalue("pg_space").url)


async def ws_drops(base: str) -> int:
    async with httpx.AsyncClient(base_url=base) as http:
        stats = (await http.get("/sim/stats")).json()
    return int(stats["websocket"]["drops"])


async def record_until(spine: Spine, enough: Callable[[], object], **options: object) -> object:
    """Run ``record`` of MARKETS until ``enough()`` (awaited) is true, then stop it."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        running = group.create_task(
            record(spine, MARKETS, stop=stop, **options)  # type: ignore[arg-type]
        )
        async with asyncio.timeout(60):
            while not await enough():  # type: ignore[misc]
                if running.done():
                    break
                await asyncio.sleep(0.05)
        stop.set()
    return running.result()


async def test_recording_through_drops_holds_every_trade_once(running_sim: RunSim, db: str) -> None:
    config = SimConfig(speed=60, ws_drop_every_s=0.7)
    with running_sim(config, afternoon_clock(config.speed)) as base:
        async with Spine(base, db=db) as spine:
            recording = recording_for(spine.store)
            drops_before = await ws_drops(base)

            async def enough() -> bool:
                count = await recording.trade_count("KRW-BTC")
                first, last = (
                    await recording.first_trade("KRW-BTC"),
                    await recording.last_trade("KRW-BTC"),
                )
                # Six simulated minutes at least, so verify has whole windows to compare.
                spans = first is not None and last is not None and last.ms - first.ms >= 360_000
                return spans and count >= 120 and await ws_drops(base) >= drops_before + 3

            first = await record_until(
                spine, enough, backfill_ms=60_000, orderbook_every_ms=0, orderbook_depth=15
            )
            summary_gaps = first.gaps  # type: ignore[attr-defined]
            counts = first.counts  # type: ignore[attr-defined]
            # a second run, later: it joins the first run's last trade
            await asyncio.sleep(0.2)  # simulated trades happen between the runs (12 s)
            before = await recording.trade_count("KRW-BTC")

            async def more() -> bool:
                return await recording.trade_count("KRW-BTC") >= before + 60

            await record_until(spine, more, kinds=["trade"])
            stored = {m: await recording.trades(m, 0, 1 << 62) for m in MARKETS}
            # Windows well before the last recorded trade: at 60x speed upstream's clock is
            # known only to within a simulated minute or so, and the newest windows may not
            # be final upstream yet (``verify`` leaves out only what it knows is forming).
            last_ms = max(t.ms for t in stored["KRW-BTC"])
            verified = await verify_recording(
                spine, "KRW-BTC", TIMEFRAMES["1m"], until_ms=last_ms - 2 * 60_000
            )
            begin = min(trades[0].ms for trades in stored.values())
            replayed = [e async for e in spine.replay(["trade"], MARKETS, start=begin, speed=0)]
            books = await recording.orderbooks("KRW-BTC", 0, 1 << 62)
            tickers = await recording.tickers("KRW-BTC", 0, 1 << 62)
            gaps = await recording.trade_gaps()
    assert summary_gaps == [] and gaps == []
    # candles built from the recording equal the simulator's REST candles, window by window
    assert verified is not None and verified.windows >= 3
    assert [(d.start_ms, d.fields, d.built, d.upstream) for d in verified.differences] == []
    assert counts.batches >= 2 and counts.orderbooks > 0 and counts.tickers > 0
    assert books and tickers and {len(b.units) for b in books} == {15}
    assert_as_simulated(config, stored)
    # replayed: every stored trade once, in exchange time order across the markets
    every = sorted((t for trades in stored.values() for t in trades), key=lambda t: (t.ms, t.seq))
    assert [e for e in replayed if isinstance(e, Trade)] == every
    btc: list[Trade] = stored["KRW-BTC"]
    # the backfill reached back about a simulated minute before the first live trade
    assert btc[-1].ms - btc[0].ms > 60_000
    # the WebSocket's own fields are kept (REST's trades have no best_*). How many came from
    # the stream rather than a fill depends on the load: 30% to most of them.
    assert any(t.best_ask_price is not None for t in btc)


async def test_recording_through_a_stalled_socket_misses_nothing(
    running_sim: RunSim, tmp_path: Path
) -> None:
    # The socket goes silent without closing (pings unanswered): the stream notices within
    # 3.5 s, reconnects, and the trades of the silence come from REST by sequential_id.
    config = SimConfig(speed=20, ws_stall_every_s=2.0)
    with running_sim(config, afternoon_clock(config.speed)) as base:
        async with Spine(base, db=str(tmp_path / "stall.sqlite")) as spine:
            recording = recording_for(spine.store)

            async def stats() -> dict[str, int]:
                async with httpx.AsyncClient(base_url=base) as http:
                    return dict((await http.get("/sim/stats")).json()["websocket"])

            before = await stats()

            async def enough() -> bool:
                seen = await stats()
                # Stalled, noticed, connected again, and trades recorded since.
                again = seen["connections"] >= before["connections"] + 2
                if not (seen["stalls"] > before["stalls"] and again):
                    return False
                return await recording.trade_count("KRW-BTC") >= 40

            summary = await record_until(spine, enough, kinds=["trade"])
            stored = {m: await recording.trades(m, 0, 1 << 62) for m in MARKETS}
            gaps = await recording.trade_gaps()
    assert summary.gaps == [] and gaps == []  # type: ignore[attr-defined]
    assert_as_simulated(config, stored)


async def test_recording_through_a_full_disk_holds_the_trades_and_writes_each_once_later(
    running_sim: RunSim,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The disk fills mid-recording (SQLite refuses with SQLITE_FULL: the file's pages capped):
    # the recorder holds what it has not written and tries again; once there is room every
    # trade of the span is stored once, and the full disk was said once, and its end.
    monkeypatch.setattr(room, "FULL_RETRY_S", 0.05)
    caplog.set_level(logging.INFO, logger="marketspine")
    config = SimConfig(speed=60)
    path = tmp_path / "full.sqlite"
    with running_sim(config, afternoon_clock(config.speed)) as base:
        async with Spine(base, db=str(path)) as spine:
            recording = recording_for(spine.store)
            store = spine.store
            assert isinstance(store, SQLiteStore)
            newest_then: list[int] = []  # upstream's newest trade when the cap was lifted

            async def cap(pages: str) -> None:
                await store.call(
                    lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}").fetchall()
                )

            async def newest_upstream_ms() -> int:
                async with httpx.AsyncClient(base_url=base) as http:
                    answer = await http.get("/v1/trades/ticks", params={"market": "KRW-BTC"})
                return int(answer.json()[0]["timestamp"])

            async def enough() -> bool:
                last = await recording.last_trade("KRW-BTC")
                if not database_alerts(caplog):  # recording: fill the disk once it has some trades
                    if await recording.trade_count("KRW-BTC") >= 20:
                        pages = await store.call(
                            lambda conn: conn.execute("PRAGMA page_count").fetchone()[0]
                        )
                        await cap(str(pages))
                    return False
                if not newest_then:  # full: lift the cap once a simulated minute went by
                    assert last is not None
                    newest = await newest_upstream_ms()
                    if newest >= last.ms + 60_000:
                        await cap("1073741823")
                        newest_then.append(newest)
                    return False
                # room again: done once what was held (and came since) is written
                return last is not None and last.ms >= newest_then[0]

            summary = await record_until(spine, enough, kinds=["trade"])
            stored = {m: await recording.trades(m, 0, 1 << 62) for m in MARKETS}
            gaps = await recording.trade_gaps()
    assert summary.gaps == [] and gaps == []  # type: ignore[attr-defined]
    assert_as_simulated(config, stored)
    assert database_alerts(caplog) == [
        ("WARNING", "database_full", str(path)),
        ("INFO", "database_writable", str(path)),
    ]


def assert_as_simulated(config: SimConfig, stored: dict[str, list[Trade]]) -> None:
    """Each market's stored trades are the simulator's from the first to the last, once."""
    history = History(config.seed, markets=config.markets, region=config.region)
    for market, trades in stored.items():
        truth = simulated_trades(history, market, trades[0], trades[-1])
        assert differences(trades, truth) == [], market


async def test_a_recording_with_keep_prunes_what_is_older_than_its_span(
    running_sim: RunSim, db: str
) -> None:
    from marketspine._base.time import DAY_MS, now_ms
    from marketspine._store.recording import TradeGap
    from marketspine.records import Orderbook, OrderbookUnit, Ticker

    old = now_ms() - 3 * DAY_MS  # well before the kept day on the simulator's clock too
    stale = [Trade("KRW-BTC", old + i, 100.0, 0.5, "BID", i + 1, 100.0, 0.0) for i in range(30)]
    books = [
        Orderbook("KRW-BTC", old + i, 1.0, 2.0, (OrderbookUnit(101.0, 1.0, 99.0, 2.0),), 0.0)
        for i in range(30)
    ]
    ticker = Ticker("KRW-ETH", old, old, 1.0, 1.0, 1.0, 1.0, 1.0, "EVEN", 0.0, 0.0, 0.0, 0.0,
                    0.0, 0.0, 0.0, 1.0, "2025-01-01", 1.0, "2025-01-01")  # fmt: skip
    gap = TradeGap("KRW-BTC", 3, 4, old + 2, old + 3, "older than 7 days", old)
    with running_sim(SimConfig(speed=60)) as base:  # from now: retention counts back from it
        async with Spine(base, db=db) as spine:
            recording = recording_for(spine.store)
            await recording.write(stale, orderbooks=books, tickers=[ticker], gaps=[gap])

            async def enough() -> bool:
                first = await recording.first_trade("KRW-BTC")
                return (
                    first is not None
                    and first.ms > old + DAY_MS
                    and await recording.orderbook_at("KRW-BTC", old + 100) is None
                )

            await record_until(
                spine,
                enough,
                kinds=("trade", "orderbook"),
                keep_ms={"trades": DAY_MS, "orderbooks": DAY_MS, "tickers": DAY_MS},
            )
            # the old gap went; the one joining the stale trades to the live ones ends inside
            # the kept day (the trades it misses there are still missed): it stays
            gaps = await recording.trade_gaps("KRW-BTC")
            assert gap not in gaps and all(g.to_ms > old + DAY_MS for g in gaps)
            assert await recording.trade_count("KRW-BTC") > 0, "what it recorded stays"
            # tickers were not recorded: their retention is not this recorder's
            assert await recording.row_count("tickers", "KRW-ETH") == 1
