"""``collect``'s progress lines for a stderr that is no terminal (a pipe, a CI log): paced by
the clock, never more than one per interval, plain text saying how far, how fast, how long."""

from __future__ import annotations

from marketspine._cli.progress import ProgressLines
from marketspine._store.backfill import ProgressEvent

MIN = 60_000


class HandClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def page(market: str, pages: int, done_ms: int, total_ms: int) -> ProgressEvent:
    candles = done_ms // MIN
    return ProgressEvent(market, "1m", pages, candles, 0, done_ms, total_ms, done_ms >= total_ms)


def test_one_line_at_most_every_interval_and_none_before_the_first() -> None:
    clock, lines = HandClock(), list[str]()
    progress = ProgressLines(lines.append, ["KRW-BTC"], "1m", every_s=10, clock=clock)
    total = 10_000 * MIN
    for step in range(1, 40):  # a page every 0.5 s for 19.5 s
        clock.now += 0.5
        progress(page("KRW-BTC", step, step * 200 * MIN, total))
        assert len(lines) == (step >= 20) + (step >= 40), (step, lines)
    clock.now += 5  # a stalled upstream: one line when pages come again, not a burst
    progress(page("KRW-BTC", 40, 40 * 200 * MIN, total))
    progress(page("KRW-BTC", 41, 41 * 200 * MIN, total))
    assert len(lines) == 2


def test_the_line_says_how_far_how_fast_and_how_long() -> None:
    clock, lines = HandClock(), list[str]()
    markets = ["KRW-BTC", "KRW-ETH"]
    progress = ProgressLines(lines.append, markets, "1m", every_s=10, clock=clock)
    progress(page("KRW-ETH", 0, 0, 0))  # nothing to fetch: done at once
    clock.now += 40
    progress(page("KRW-BTC", 400, 80_000 * MIN, 320_000 * MIN))
    (line,) = lines
    assert line == (
        "marketspine: collect 1m KRW-BTC KRW-ETH: 25.0% of the range, 80,000 candles in "
        "400 pages, 2,000 candles/s, 1 of 2 markets done, 40s elapsed, ETA 2m 00s"
    )
    assert "\x1b" not in line and "\n" not in line


def test_a_market_not_heard_from_yet_counts_as_not_started() -> None:
    clock, lines = HandClock(), list[str]()
    markets = [f"KRW-M{i}" for i in range(4)]
    progress = ProgressLines(lines.append, markets, "1h", every_s=1, clock=clock)
    clock.now += 3600 * 2 + 5 * 60
    progress(page("KRW-M0", 1, 50 * MIN, 100 * MIN))
    (line,) = lines
    # half of one market in four: 12.5%, not the 50% of the part known
    assert line.startswith("marketspine: collect 1h 4 markets: 12.5% of the range")
    assert line.endswith("2h 05m elapsed, ETA 14h 35m")


def test_an_interval_of_zero_writes_nothing() -> None:
    clock, lines = HandClock(), list[str]()
    progress = ProgressLines(lines.append, ["KRW-BTC"], "1m", every_s=0, clock=clock)
    for step in range(1, 5):
        clock.now += 100
        progress(page("KRW-BTC", step, step * MIN, 10 * MIN))
    assert lines == []


def test_a_log_that_went_away_stops_the_lines_not_the_backfill() -> None:
    clock, tried = HandClock(), []

    def closed_pipe(line: str) -> None:
        tried.append(line)
        raise BrokenPipeError(32, "Broken pipe")

    progress = ProgressLines(closed_pipe, ["KRW-BTC"], "1m", every_s=1, clock=clock)
    for step in range(1, 5):
        clock.now += 2
        progress(page("KRW-BTC", step, step * 200 * MIN, 10_000 * MIN))  # never raises
    assert len(tried) == 1  # and it does not try again
