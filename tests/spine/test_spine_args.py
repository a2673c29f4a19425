"""Every public Spine and Client method checks its arguments first: a drawn bad value of any
kind raises InvalidRequestError naming the argument (never AttributeError or TypeError from
inside), and every accepted form of a good value gives the same answer. Runs against the
simulator in-process."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import aclose
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketspine import Channel, Client, InvalidRequestError, Priority, Spine
from marketspine._base.args import EPOCH_MS_MAX, EPOCH_MS_MIN, STREAM_KINDS
from marketspine._base.time import to_ms
from marketspine._base.timeframes import TIMEFRAMES
from marketspine.sim import SimConfig, create_app

_MARKET_LIKE = r"\s*[A-Za-z0-9]+-[A-Za-z0-9]+\s*"

# Values of every type that no argument accepts.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.binary(max_size=6),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.timedeltas(),
    st.complex_numbers(),
    st.builds(object),
)
bad_market = st.one_of(
    junk,
    st.integers(),
    st.text(max_size=12).filter(lambda t: not _matches(_MARKET_LIKE, t)),
)
bad_markets = st.one_of(
    st.integers(),
    st.floats(),
    st.just([]),
    st.lists(bad_market, min_size=1, max_size=2),
    st.dictionaries(st.just("KRW-BTC"), st.integers(), min_size=1),
)
bad_timeframe = st.one_of(
    junk,
    st.integers(),
    st.text(max_size=5).filter(lambda t: t not in TIMEFRAMES and t not in ("60m", "240m")),
)
bad_time = st.one_of(
    junk.filter(lambda v: v is not None),
    st.integers(max_value=EPOCH_MS_MIN - 1),
    st.integers(min_value=EPOCH_MS_MAX + 1),
    st.text(max_size=12).filter(lambda t: not _iso(t)),
    st.times(),
)
bad_int = st.one_of(junk, st.text(max_size=4), st.integers().map(str))
bad_priority = st.one_of(
    junk,
    st.integers(),
    st.text(max_size=8).filter(lambda t: t.strip().upper() not in Priority.__members__),
)
bad_channel = st.one_of(
    junk,
    st.integers(),
    st.text(max_size=8).filter(lambda t: t.strip().upper() not in Channel.__members__),
)
bad_flag = st.one_of(
    junk.filter(lambda v: not isinstance(v, bool)), st.integers(), st.text(max_size=3)
)
bad_seconds = st.one_of(
    junk.filter(lambda v: v is not None and not isinstance(v, float)),
    st.floats().filter(lambda f: not f >= 0 or f == float("inf")),
    st.integers(max_value=-1),
    st.text(max_size=3),
)
bad_kinds: st.SearchStrategy[object] = st.one_of(
    st.integers(),
    st.just([]),
    # Upbit's own names of the hour candles are accepted too (hypothesis once drew one).
    st.text(max_size=10).filter(
        lambda t: t.strip() not in (*STREAM_KINDS, "candle.60m", "candle.240m")
    ),
    st.lists(st.one_of(st.integers(), st.none(), st.just("candle.2m")), min_size=1, max_size=2),
)
bad_needs = st.one_of(
    junk.filter(lambda v: not isinstance(v, dict) or v),
    st.dictionaries(
        bad_market.filter(lambda v: isinstance(v, str | int)), st.just({"1m": 5}), min_size=1
    ),
    st.dictionaries(st.just("KRW-BTC"), st.one_of(st.integers(), st.text(max_size=2)), min_size=1),
    st.dictionaries(
        st.just("KRW-BTC"),
        st.dictionaries(
            bad_timeframe.filter(lambda v: isinstance(v, str | int)), st.just(5), min_size=1
        ),
        min_size=1,
    ),
    st.dictionaries(
        st.just("KRW-BTC"),
        st.dictionaries(st.just("1m"), bad_int.filter(lambda v: v is not None), min_size=1),
        min_size=1,
    ),
)
bad_count = st.one_of(bad_int.filter(lambda v: v is not None), st.integers(max_value=0))
bad_depth = st.one_of(
    junk.filter(lambda v: v is not None), st.integers().filter(lambda n: n not in (1, 5, 15, 30))
)
bad_maxsize = st.one_of(junk, st.integers(max_value=0), st.text(max_size=3))
# ``since`` of a stream of KRW-BTC: not a mapping, a market outside it, or a value that is
# neither a Trade of it nor a sequential_id > 0 (None and {} mean no since).
bad_since = st.one_of(
    junk.filter(lambda v: v is not None and v != {}),
    st.integers(),
    st.text(max_size=3),
    st.dictionaries(st.sampled_from(["KRW-ETH", "BTC-ETH"]), st.integers(1), min_size=1),
    st.dictionaries(
        st.just("KRW-BTC"), st.one_of(junk, st.integers(max_value=0), st.text()), min_size=1
    ),
)


def _matches(pattern: str, text: str) -> bool:
    import re

    return re.fullmatch(pattern, text) is not None


def _iso(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return False
    return True


START = "2026-01-01T00:00:00Z"
END = "2026-01-01T05:00:00Z"

# (method, the good arguments, the argument to spoil, its bad values)
CASES: list[tuple[str, dict[str, Any], str, st.SearchStrategy[Any]]] = [
    ("candles", {"market": "KRW-BTC", "timeframe": "1h", "count": 5}, "market", bad_market),
    ("candles", {"market": "KRW-BTC", "timeframe": "1h", "count": 5}, "timeframe", bad_timeframe),
    ("candles", {"market": "KRW-BTC", "timeframe": "1h"}, "count", bad_count),
    ("candles", {"market": "KRW-BTC", "timeframe": "1h", "end": END}, "start", bad_time),
    ("candles", {"market": "KRW-BTC", "timeframe": "1h", "start": START}, "end", bad_time),
    ("candles", {"market": "KRW-BTC", "timeframe": "1h", "count": 5}, "priority", bad_priority),
    ("candles", {"market": "KRW-BTC", "timeframe": "1h", "count": 5}, "closed_only", bad_flag),
    ("candles", {"market": "KRW-BTC", "timeframe": "1h", "count": 5}, "fill", bad_flag),
    ("preload", {}, "needs", bad_needs),
    ("preload", {"needs": {"KRW-BTC": {"1h": 5}}}, "live", bad_flag),
    ("preload", {"needs": {"KRW-BTC": {"1h": 5}}}, "priority", bad_priority),
    ("ticker", {}, "market", bad_market),
    ("ticker", {"market": "KRW-BTC"}, "channel", bad_channel),
    ("ticker", {"market": "KRW-BTC"}, "max_age_s", bad_seconds),
    ("ticker", {"market": "KRW-BTC"}, "priority", bad_priority),
    ("tickers", {}, "markets", bad_markets),
    (
        "tickers",
        {},
        "quote",
        st.one_of(junk.filter(lambda v: v is not None), st.integers(), st.just("")),
    ),
    ("tickers", {"markets": ["KRW-BTC"]}, "channel", bad_channel),
    ("orderbook", {}, "market", bad_market),
    ("orderbook", {"market": "KRW-BTC"}, "max_age_s", bad_seconds),
    ("orderbooks", {}, "markets", bad_markets),
    ("orderbooks", {"markets": "KRW-BTC"}, "priority", bad_priority),
    ("trades", {}, "market", bad_market),
    ("trades", {"market": "KRW-BTC"}, "count", bad_count),
    ("trades", {"market": "KRW-BTC", "end": END}, "start", bad_time),
    ("trades", {"market": "KRW-BTC", "start": START}, "end", bad_time),
    ("orderbooks_at", {"time": START}, "market", bad_market),
    ("orderbooks_at", {"market": "KRW-BTC"}, "time", bad_time),
    ("orderbooks_history", {"start": START}, "market", bad_market),
    ("orderbooks_history", {"market": "KRW-BTC"}, "start", bad_time),
    ("orderbooks_history", {"market": "KRW-BTC", "start": START}, "end", bad_time),
    ("replay", {"markets": ["KRW-BTC"], "start": START}, "kinds", bad_kinds),
    ("replay", {"kinds": ["trade"], "start": START}, "markets", bad_markets),
    ("replay", {"kinds": ["trade"], "markets": ["KRW-BTC"]}, "start", bad_time),
    ("replay", {"kinds": ["trade"], "markets": ["KRW-BTC"], "start": START}, "speed", bad_seconds),
    ("watch", {"markets": ["KRW-BTC"]}, "kinds", bad_kinds),
    ("watch", {"kinds": ["trade"]}, "markets", bad_markets),
    ("watch", {"kinds": ["orderbook"], "markets": ["KRW-BTC"]}, "depth", bad_depth),
    ("unwatch", {"markets": ["KRW-BTC"]}, "kinds", bad_kinds),
    ("unwatch", {"kinds": ["trade"]}, "markets", bad_markets),
    ("stream", {"markets": ["KRW-BTC"]}, "types", bad_kinds),
    ("stream", {"types": ["trade"]}, "markets", bad_markets),
    ("stream", {"types": ["trade"], "markets": ["KRW-BTC"]}, "maxsize", bad_maxsize),
    ("stream", {"types": ["trade"], "markets": ["KRW-BTC"]}, "since", bad_since),
    ("replay", {"kinds": "trade", "markets": "KRW-BTC", "start": "2026-01-01"}, "end", bad_time),
    ("markets", {}, "refresh", bad_flag),
    ("tick_size", {"price": 100.0}, "market", bad_market),
    ("tick_size", {"market": "KRW-BTC"}, "price", bad_seconds),
]


@pytest.fixture
def app() -> Any:
    return create_app(SimConfig(seed=3, rate_limit=0))


@pytest.fixture
async def spine(app: Any, tmp_path: Path) -> AsyncIterator[Spine]:
    async with Spine(
        "http://sim", tmp_path / "args.db", transport=httpx.ASGITransport(app=app)
    ) as s:
        yield s


async def call(spine: Spine, method: str, kwargs: dict[str, Any]) -> Any:
    if method in ("stream", "replay"):
        events = getattr(spine, method)(**kwargs)
        try:
            return await anext(events)
        finally:
            await aclose(events)
    result = getattr(spine, method)(**kwargs)
    return await result if method != "tick_size" else result


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), case=st.sampled_from(CASES))
async def test_a_bad_argument_of_any_kind_is_named_in_an_invalid_request_error(
    spine: Spine, data: st.DataObject, case: tuple[str, dict[str, Any], str, st.SearchStrategy[Any]]
) -> None:
    method, good, name, bad = case
    value = data.draw(bad, label=f"{method}({name}=...)")
    with pytest.raises(InvalidRequestError) as caught:
        await call(spine, method, {**good, name: value})
    assert name in str(caught.value)


def test_every_public_method_is_covered() -> None:
    public = {
        name for name in dir(Spine) if not name.startswith("_") and callable(getattr(Spine, name))
    }
    without_arguments = {
        "aclose", "clear_memory", "live_statistics", "polled", "statistics", "warmup",
    }  # fmt: skip
    assert public - without_arguments == {method for method, *_ in CASES}


# The Client's to_ms takes any int as milliseconds.
client_time = bad_time.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))
# An empty list of markets is an empty answer from the Client (it is a building block).
client_markets = bad_markets.filter(lambda v: v != [])

CLIENT_CASES: list[tuple[str, dict[str, Any], str, st.SearchStrategy[Any]]] = [
    ("candles", {"timeframe": "1h"}, "market", bad_market),
    ("candles", {"market": "KRW-BTC"}, "timeframe", bad_timeframe),
    ("candles", {"market": "KRW-BTC", "timeframe": "1h"}, "count", bad_count),
    ("candles", {"market": "KRW-BTC", "timeframe": "1h"}, "to_ms", client_time),
    ("candles", {"market": "KRW-BTC", "timeframe": "1h"}, "priority", bad_priority),
    ("trades", {}, "market", bad_market),
    ("trades", {"market": "KRW-BTC"}, "count", bad_count),
    ("tickers", {}, "markets", client_markets),
    ("orderbooks", {}, "markets", client_markets),
    ("instruments", {}, "markets", client_markets),
    ("trades", {"market": "KRW-BTC"}, "priority", bad_priority),
    ("tickers", {"markets": ["KRW-BTC"]}, "priority", bad_priority),
    ("markets", {}, "priority", bad_priority),
]


@pytest.fixture
async def client(app: Any) -> AsyncIterator[Client]:
    async with Client("http://sim", transport=httpx.ASGITransport(app=app)) as c:
        yield c


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), case=st.sampled_from(CLIENT_CASES))
async def test_the_client_names_bad_arguments_too(
    client: Client,
    data: st.DataObject,
    case: tuple[str, dict[str, Any], str, st.SearchStrategy[Any]],
) -> None:
    method, good, name, bad = case
    value = data.draw(bad, label=f"Client.{method}({name}=...)")
    with pytest.raises(InvalidRequestError) as caught:
        await getattr(client, method)(**{**good, name: value})
    assert name.removesuffix("s") in str(caught.value)  # a bad item of markets is a market


moments = st.datetimes(min_value=dt.datetime(2026, 7, 1), max_value=dt.datetime(2026, 7, 20)).map(
    lambda d: d.replace(minute=0, second=0, microsecond=0)
)
KST = dt.timezone(dt.timedelta(hours=9))


FORMS: list[Callable[[dt.datetime], dt.datetime | str | int]] = [
    lambda d: d,  # naive: UTC
    lambda d: d.replace(tzinfo=dt.UTC).astimezone(KST),
    lambda d: d.isoformat(),
    lambda d: d.replace(tzinfo=dt.UTC).astimezone(KST).isoformat(),
    lambda d: to_ms(d),
]


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(start=moments, hours=st.integers(1, 30), form=st.sampled_from(range(len(FORMS))))
async def test_every_form_of_a_time_gives_the_same_candles(
    spine: Spine, start: dt.datetime, hours: int, form: int
) -> None:
    end = start + dt.timedelta(hours=hours)
    expected = list(await spine.candles("KRW-BTC", "1h", start=to_ms(start), end=to_ms(end)))
    assert expected, "the simulator trades KRW-BTC every hour"
    got = await spine.candles(
        "krw-btc", TIMEFRAMES["1h"], start=FORMS[form](start), end=FORMS[form](end)
    )
    assert list(got) == expected
    if start.hour == 0:
        day = await spine.candles("KRW-BTC", "1h", start=start.date(), end=to_ms(end))
        assert list(day) == expected
