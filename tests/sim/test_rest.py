"""REST semantics of the simulator, part 1: market list and candles (API.md §1.1–§2).

In-process (httpx.ASGITransport) on a fixed clock, so every answer is deterministic; answers
are compared with the history model they come from, not with numbers worked out by hand.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette

from marketspine._base.time import DAY_MS, MINUTE_MS, format_utc, parse_naive_utc
from marketspine._base.timeframes import TIMEFRAMES
from marketspine.sim import History, SimConfig, create_app
from marketspine.sim._rest_params import stamp
from marketspine.sim._universe import SimMarket

LIQUID = "KRW-BTC"
CAUTION_KEYS = {
    "PRICE_FLUCTUATIONS",
    "TRADING_VOLUME_SOARING",
    "DEPOSIT_AMOUNT_SOARING",
    "GLOBAL_PRICE_DIFFERENCES",
    "CONCENTRATION_OF_SMALL_ACCOUNTS",
}
BASE_FIELDS = [
    "market",
    "candle_date_time_utc",
    "candle_date_time_kst",
    "opening_price",
    "high_price",
    "low_price",
    "trade_price",
    "timestamp",
    "candle_acc_trade_price",
    "candle_acc_trade_volume",
]
KINDS = [
    ("/v1/candles/seconds", "1s", BASE_FIELDS),
    *[
        (tf.rest_path, tf.name, [*BASE_FIELDS, "unit"])
        for tf in TIMEFRAMES.values()
        if tf.unit == "minute"
    ],
    ("/v1/candles/days", "1d", [*BASE_FIELDS, "prev_closing_price", "change_price", "change_rate"]),
    ("/v1/candles/weeks", "1w", [*BASE_FIELDS, "first_day_of_period"]),
    ("/v1/candles/months", "1M", [*BASE_FIELDS, "first_day_of_period"]),
    ("/v1/candles/years", "1y", [*BASE_FIELDS, "first_day_of_period"]),
]


def on_upbit(market: SimMarket, now_ms: int) -> bool:
    """Listed at ``now_ms`` and not delisted yet."""
    return market.listed_ms <= now_ms and (
        market.delisted_ms is None or now_ms < market.delisted_ms
    )


def history_of(app: Starlette) -> History:
    history: History = app.state.sim.history
    return history


def sparse_market(app: Starlette, now_ms: int) -> str:
    """The listed market whose last 50 one-minute candles span the most time."""
    history = history_of(app)
    spans: dict[str, int] = {}
    for market in history.markets:
        if market.listed_ms > now_ms - 30 * DAY_MS:
            continue
        bars = history.candles(
            market.code, TIMEFRAMES["1m"], before_ms=now_ms + 1, now_ms=now_ms, count=50
        )
        if len(bars) == 50:
            spans[market.code] = bars[0].start_ms - bars[-1].start_ms
    return max(spans, key=lambda code: spans[code])


async def get_json(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def error_of(client: httpx.AsyncClient, url: str, status: int, **params: Any) -> str:
    response = await client.get(url, params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["name"] == status
    message: str = body["error"]["message"]
    return message


# -- /v1/market/all ---------------------------------------------------------------------------


async def test_market_all_lists_listed_markets_without_details(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    rows = await get_json(sim_client, "/v1/market/all")
    expected = [m.code for m in history_of(sim_app).markets if on_upbit(m, sim_now_ms)]
    assert [row["market"] for row in rows] == expected
    assert len(expected) >= 20
    assert all(list(row) == ["market", "korean_name", "english_name"] for row in rows)


@pytest.mark.parametrize("flag", ["is_details", "isDetails"])
async def test_market_all_details_carry_market_event(
    sim_client: httpx.AsyncClient, sim_app: Starlette, flag: str
) -> None:
    rows = await get_json(sim_client, "/v1/market/all", **{flag: "true"})
    by_code = {m.code: m for m in history_of(sim_app).markets}
    for row in rows:
        event = row["market_event"]
        assert set(event["caution"]) == CAUTION_KEYS
        market = by_code[row["market"]]
        assert event["warning"] is market.warning
        assert event["caution"] == {k: bool(market.caution.get(k, False)) for k in CAUTION_KEYS}
    assert any(row["market_event"]["warning"] for row in rows)
    assert (
        "market_event" not in (await get_json(sim_client, "/v1/market/all", **{flag: "false"}))[0]
    )


@pytest.mark.parametrize("region", ["sg", "id", "th"])
async def test_regional_sites_carry_market_warning(region: str, sim_now_ms: int) -> None:
    app = create_app(SimConfig(region=region, rate_limit=0), clock=lambda: sim_now_ms)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        rows = await get_json(client, "/v1/market/all", is_details="true")
    assert {row["market_warning"] for row in rows} <= {"NONE", "CAUTION"}
    assert all("market_event" not in row for row in rows)
    assert all(("korean_name" in row) is (region != "id") for row in rows)


# -- candles: shapes and values -----------------------------------------------------------------


@pytest.mark.parametrize(("path", "name", "fields"), KINDS)
async def test_candles_equal_history_newest_first_with_upbit_fields(
    sim_client: httpx.AsyncClient,
    sim_app: Starlette,
    sim_now_ms: int,
    path: str,
    name: str,
    fields: list[str],
) -> None:
    timeframe = TIMEFRAMES[name]
    to_ms = timeframe.floor(sim_now_ms - 3 * DAY_MS)
    rows = await get_json(sim_client, path, market=LIQUID, count=5, to=format_utc(to_ms))
    bars = history_of(sim_app).candles(
        LIQUID, timeframe, before_ms=to_ms, now_ms=sim_now_ms, count=5
    )
    assert len(rows) == len(bars) == 5
    for row, bar in zip(rows, bars, strict=True):
        assert list(row) == fields
        assert row["market"] == LIQUID
        assert row["candle_date_time_utc"] == format_utc(bar.start_ms)
        assert row["candle_date_time_kst"] == format_utc(bar.start_ms + 9 * 3_600_000)
        ohlc = [row[k] for k in ("opening_price", "high_price", "low_price", "trade_price")]
        assert ohlc == [bar.open, bar.high, bar.low, bar.close]
        assert row["timestamp"] == bar.last_ms and isinstance(row["timestamp"], int)
        assert row["candle_acc_trade_volume"] == bar.volume
        assert row["candle_acc_trade_price"] == bar.value
        assert all(isinstance(row[k], int | float) for k in fields[3:7])
        if "unit" in row:
            assert row["unit"] == timeframe.minutes
    starts = [parse_naive_utc(row["candle_date_time_utc"]) for row in rows]
    assert starts == sorted(starts, reverse=True) and starts[0] < to_ms


async def test_to_is_exclusive_on_the_candle_start(sim_client: httpx.AsyncClient) -> None:
    page = await get_json(sim_client, "/v1/candles/minutes/1", market=LIQUID, count=3)
    second = page[1]["candle_date_time_utc"]
    after = await get_json(sim_client, "/v1/candles/minutes/1", market=LIQUID, to=second)
    assert after == [page[2]]
    just_after = format_utc(parse_naive_utc(second) + 1000)
    assert await get_json(sim_client, "/v1/candles/minutes/1", market=LIQUID, to=just_after) == [
        page[1]
    ]


@pytest.mark.parametrize(
    "to",
    [
        "2026-07-30T05:00:00",
        "2026-07-30 05:00:00",
        "2026-07-30T05:00:00Z",
        "2026-07-30T14:00:00+09:00",
        "2026-07-30T05:00:00.000Z",
    ],
)
async def test_to_accepts_upbit_time_forms_naive_is_utc(
    sim_client: httpx.AsyncClient, to: str
) -> None:
    rows = await get_json(sim_client, "/v1/candles/minutes/5", market=LIQUID, count=2, to=to)
    assert [row["candle_date_time_utc"] for row in rows] == [
        "2026-07-30T04:55:00",
        "2026-07-30T04:50:00",
    ]


async def test_unencoded_plus_in_to_is_invalid_parameter(sim_client: httpx.AsyncClient) -> None:
    # A literal "+" in a query string means a space, so the offset no longer parses.
    response = await sim_client.get(
        "/v1/candles/minutes/1?market=KRW-BTC&to=2026-07-30T14:00:00+09:00"
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": {"name": 400, "message": "Invalid parameter. Check the given value!"}
    }
    assert "Remaining-Req" in response.headers


async def test_count_defaults_to_one_and_clamps_to_200(sim_client: httpx.AsyncClient) -> None:
    assert len(await get_json(sim_client, "/v1/candles/minutes/1", market=LIQUID)) == 1
    rows = await get_json(sim_client, "/v1/candles/minutes/1", market=LIQUID, count=1000)
    assert len(rows) == 200
    message = await error_of(sim_client, "/v1/candles/days", 400, market=LIQUID, count="abc")
    assert message == "Type mismatch error. Check the parameters type!"
    # Upbit's answer to count=0 is undocumented; the simulator calls it an invalid value.
    message = await error_of(sim_client, "/v1/candles/days", 400, market=LIQUID, count=0)
    assert message == "Invalid parameter. Check the given value!"


async def test_first_candle_without_to_is_the_forming_one(
    sim_client: httpx.AsyncClient, sim_now_ms: int
) -> None:
    for path, name in [("/v1/candles/minutes/1", "1m"), ("/v1/candles/days", "1d")]:
        [row] = await get_json(sim_client, path, market=LIQUID)
        start = parse_naive_utc(row["candle_date_time_utc"])
        assert start == TIMEFRAMES[name].floor(sim_now_ms)
        assert start <= row["timestamp"] <= sim_now_ms


async def test_to_in_the_future_means_now(sim_client: httpx.AsyncClient, sim_now_ms: int) -> None:
    now_page = await get_json(sim_client, "/v1/candles/minutes/1", market=LIQUID, count=3)
    future = format_utc(sim_now_ms + 2 * DAY_MS)
    assert (
        await get_json(sim_client, "/v1/candles/minutes/1", market=LIQUID, count=3, to=future)
        == now_page
    )


async def test_windows_without_trades_have_no_candle(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    code = sparse_market(sim_app, sim_now_ms)
    rows = await get_json(sim_client, "/v1/candles/minutes/1", market=code, count=50)
    starts = [parse_naive_utc(row["candle_date_time_utc"]) for row in rows]
    gaps = [a - b for a, b in itertools.pairwise(starts)]
    assert max(gaps) > MINUTE_MS  # whole minutes are missing ...
    assert all(row["candle_acc_trade_volume"] > 0 for row in rows)  # ... not filled with zeros


async def test_before_listing_is_empty_and_unknown_markets_are_404(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    listed = [m for m in history_of(sim_app).markets if on_upbit(m, sim_now_ms)]
    newest = max(listed, key=lambda m: m.listed_ms)
    to = format_utc(newest.listed_ms)
    assert await get_json(sim_client, "/v1/candles/days", market=newest.code, to=to) == []
    for market in ["KRW-NOPE", "KRW-BTC,KRW-ETH"]:
        message = await error_of(sim_client, "/v1/candles/minutes/1", 404, market=market)
        assert message == "Code not found"
    message = await error_of(sim_client, "/v1/candles/minutes/1", 400)
    assert message == "Missing request parameter error. Check the required parameters!"


@pytest.mark.parametrize("unit", ["2", "120", "480", "abc"])
async def test_invalid_minute_unit_is_400(sim_client: httpx.AsyncClient, unit: str) -> None:
    message = await error_of(sim_client, f"/v1/candles/minutes/{unit}", 400, market=LIQUID)
    assert message == "specified unit is not valid."


async def test_seconds_candles_only_for_the_last_three_months(
    sim_client: httpx.AsyncClient, sim_now_ms: int
) -> None:
    old = format_utc(sim_now_ms - 91 * DAY_MS)
    assert await get_json(sim_client, "/v1/candles/seconds", market=LIQUID, to=old) == []
    recent = format_utc(sim_now_ms - 80 * DAY_MS)
    rows = await get_json(sim_client, "/v1/candles/seconds", market=LIQUID, to=recent, count=3)
    assert len(rows) == 3


async def test_day_candles_carry_signed_change_from_previous_close(
    sim_client: httpx.AsyncClient, sim_app: Starlette
) -> None:
    rows = await get_json(sim_client, "/v1/candles/days", market=LIQUID, count=30)
    history = history_of(sim_app)
    for row in rows:
        start = parse_naive_utc(row["candle_date_time_utc"])
        prev = history.prev_close(LIQUID, start)
        assert row["prev_closing_price"] == prev
        assert row["change_price"] == pytest.approx(row["trade_price"] - prev, abs=1e-8)
        assert row["change_rate"] == pytest.approx(row["change_price"] / prev, abs=1e-9)
    assert any(row["change_price"] < 0 for row in rows)  # signed, not absolute
    # On a liquid market every day trades, so the previous close is the next row's close.
    assert [r["prev_closing_price"] for r in rows[:-1]] == [r["trade_price"] for r in rows[1:]]


async def test_converting_price_unit_adds_converted_trade_price(
    sim_client: httpx.AsyncClient, sim_app: Starlette
) -> None:
    [krw] = await get_json(
        sim_client, "/v1/candles/days", market=LIQUID, converting_price_unit="KRW"
    )
    assert krw["converted_trade_price"] == krw["trade_price"]
    assert list(krw)[-1] == "converted_trade_price"
    btc_quoted = next(m.code for m in history_of(sim_app).markets if m.quote == "BTC")
    [row] = await get_json(
        sim_client, "/v1/candles/days", market=btc_quoted, converting_price_unit="KRW"
    )
    rate = history_of(sim_app).last_trade("KRW-BTC", row["timestamp"])
    assert rate is not None
    assert row["converted_trade_price"] == pytest.approx(row["trade_price"] * rate.price)
    [plain] = await get_json(sim_client, "/v1/candles/days", market=LIQUID)
    assert "converted_trade_price" not in plain


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("/v1/candles/weeks", lambda d: d.weekday() == 0),
        ("/v1/candles/months", lambda d: d.day == 1),
        ("/v1/candles/years", lambda d: (d.month, d.day) == (1, 1)),
    ],
)
async def test_period_candles_start_on_their_first_day(
    sim_client: httpx.AsyncClient, path: str, check: Any
) -> None:
    rows = await get_json(sim_client, path, market=LIQUID, count=5)
    for row in rows:
        assert row["candle_date_time_utc"].endswith("T00:00:00")
        assert row["candle_date_time_kst"].endswith("T09:00:00")
        assert row["first_day_of_period"] == row["candle_date_time_utc"][:10]
        assert check(dt.date.fromisoformat(row["first_day_of_period"]))


@pytest.mark.parametrize(
    "path", ["/v1/candles/days", "/v1/candles/weeks", "/v1/candles/months", "/v1/candles/minutes/5"]
)
async def test_trailing_slash_before_query_is_the_same_path(
    sim_client: httpx.AsyncClient, path: str
) -> None:
    plain = await sim_client.get(path, params={"market": LIQUID, "count": 3})
    slashed = await sim_client.get(path + "/", params={"market": LIQUID, "count": 3})
    assert slashed.status_code == 200
    assert slashed.content == plain.content


async def test_lower_case_market_is_accepted(sim_client: httpx.AsyncClient) -> None:
    upper = await get_json(sim_client, "/v1/candles/minutes/1", market="KRW-BTC", count=2)
    lower = await get_json(sim_client, "/v1/candles/minutes/1", market="krw-btc", count=2)
    assert lower == upper


async def test_markets_listed_after_now_do_not_exist_yet(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int, sim_clock: Any
) -> None:
    future = [m for m in history_of(sim_app).markets if m.listed_ms > sim_now_ms]
    assert future, "the default universe lists some markets after SIM_NOW_MS"
    code = future[0].code
    listed = [row["market"] for row in await get_json(sim_client, "/v1/market/all")]
    assert code not in listed
    assert await error_of(sim_client, "/v1/candles/days", 404, market=code) == "Code not found"
    assert await error_of(sim_client, "/v1/ticker", 404, markets=code) == "Code not found"
    sim_clock.ms = future[0].listed_ms + 3 * DAY_MS  # three days after its listing
    listed = [row["market"] for row in await get_json(sim_client, "/v1/market/all")]
    assert code in listed
    days = await get_json(sim_client, "/v1/candles/days", market=code, count=10)
    assert 1 <= len(days) <= 4
    assert parse_naive_utc(days[-1]["candle_date_time_utc"]) >= future[0].listed_ms


@given(st.integers(min_value=0, max_value=4_102_444_800_000))  # 1970 .. 2100
def test_fast_time_labels_equal_format_utc(ms: int) -> None:
    assert stamp(ms) == format_utc(ms)
