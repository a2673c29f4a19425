"""The pure parts of serve's answers: kept closed answers stay within their byte bound,
least recently used out first; candle rows render in Upbit's field order."""

from __future__ import annotations

from marketspine._base.memory import MemoryBudget
from marketspine._base.timeframes import parse_timeframe
from marketspine._upbit.rest_rows import CandleRows, ClosedAnswers
from marketspine.records import Candle


def test_closed_answers_stay_within_their_bytes_least_recently_used_out() -> None:
    entry = ClosedAnswers.ENTRY_BYTES  # each key and its slot are charged too
    kept = ClosedAnswers(max_bytes=4 * (240 + entry) + 100)
    for name in "abcd":
        kept.put(name, b"x" * 240)
    assert kept.get("a") is not None  # now the most recently used
    kept.put("e", b"y" * 240)  # over the bound: the least recently used goes
    assert kept.get("b") is None and kept.get("a") is not None
    assert kept.bytes == 4 * (240 + entry)
    kept.put("huge", b"z" * 600)  # over a quarter of the bound: not kept at all
    assert kept.get("huge") is None and kept.bytes == 4 * (240 + entry)


def test_many_tiny_closed_answers_are_bounded_by_their_keys_too() -> None:
    kept = ClosedAnswers(max_bytes=100_000)
    for n in range(10_000):  # empty answers ("[]"): only the keys would grow before
        kept.put(("1m", "KRW-BTC", 1, n), b"[]")
    assert kept.bytes <= 100_000
    assert len(kept) == 100_000 // (2 + ClosedAnswers.ENTRY_BYTES)


def test_day_rows_compare_with_the_day_before_newest_first() -> None:
    day = parse_timeframe("1d")
    first = Candle("KRW-BTC", "1d", 0, 100.0, 110.0, 90.0, 105.0, 2.0, 200.0, 1000)
    second = Candle("KRW-BTC", "1d", 86_400_000, 105.0, 120.0, 100.0, 99.0, 1.0, 99.0, 86_401_000)
    page = CandleRows().page([first, second], day, previous=None, forming_start_ms=None)
    assert page.startswith(b'[{"market":"KRW-BTC","candle_date_time_utc":"1970-01-02T00:00:00"')
    assert b'"prev_closing_price":105.0,"change_price":-6.0,"change_rate":-0.0571428571}' in page
    assert b'"prev_closing_price":100.0,"change_price":5.0,"change_rate":0.05}]' in page


def test_closed_answers_are_charged_to_the_shared_memory_budget() -> None:
    budget = MemoryBudget(10_000)
    kept = ClosedAnswers(max_bytes=100_000, budget=budget)
    for n in range(5):
        kept.put(("1m", "KRW-BTC", 200, n), b"x" * 1000)
    assert budget.used_bytes == kept.bytes == 5 * (1000 + ClosedAnswers.ENTRY_BYTES)
    assert kept.get(("1m", "KRW-BTC", 200, 0)) is not None  # touched: the newest now
    # Another holder's data needs room: the least recently used answers go first.
    budget.register("other", lambda key: None)
    budget.charge("other", "big", 10_000 - 2 * (1000 + ClosedAnswers.ENTRY_BYTES))
    assert len(kept) == 2 and kept.get(("1m", "KRW-BTC", 200, 0)) is not None
    assert kept.get(("1m", "KRW-BTC", 200, 1)) is None
    assert budget.used_bytes == 10_000 and kept.bytes == 2 * (1000 + ClosedAnswers.ENTRY_BYTES)
