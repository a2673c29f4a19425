"""REST semantics of the simulator, part 2: trades, tickers, order books, headers, errors and
determinism (API.md §1.3–§1.9, §4). In-process on a fixed clock."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from marketspine._base.time import DAY_MS, format_utc
from marketspine._upbit.ticks import tick_size
from marketspine.sim import History, SimConfig, create_app
from marketspine.sim._universe import SimMarket

LIQUID = "KRW-BTC"
TICK_FIELDS = [
    "market",
    "trade_date_utc",
    "trade_time_utc",
    "timestamp",
    "trade_price",
    "trade_volume",
    "prev_closing_price",
    "change_price",
    "ask_bid",
    "sequential_id",
]
TICKER_FIELDS = [
    "market",
    "trade_date",
    "trade_time",
    "trade_date_kst",
    "trade_time_kst",
    "trade_timestamp",
    "opening_price",
    "high_price",
    "low_price",
    "trade_price",
    "prev_closing_price",
    "change",
    "change_price",
    "change_rate",
    "signed_change_price",
    "signed_change_rate",
    "trade_volume",
    "acc_trade_price",
    "acc_trade_price_24h",
    "acc_trade_volume",
    "acc_trade_volume_24h",
    "highest_52_week_price",
    "highest_52_week_date",
    "lowest_52_week_price",
    "lowest_52_week_date",
    "timestamp",
]


def on_upbit(market: SimMarket, now_ms: int) -> bool:
    """Listed at ``now_ms`` and not delisted yet."""
    return market.listed_ms <= now_ms and (
        market.delisted_ms is None or now_ms < market.delisted_ms
    )


def history_of(app: Starlette) -> History:
    history: History = app.state.sim.history
    return history


async def get_json(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def error_of(client: httpx.AsyncClient, url: str, status: int, **params: Any) -> str:
    response = await client.get(url, params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["name"] == status
    message: str = response.json()["error"]["message"]
    return message


# -- /v1/trades/ticks ---------------------------------------------------------------------------


async def test_trades_equal_history_newest_first(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    rows = await get_json(sim_client, "/v1/trades/ticks", market=LIQUID, count=50)
    trades = history_of(sim_app).trades(LIQUID, before_ms=sim_now_ms + 1, count=50)
    assert len(rows) == len(trades) == 50
    for row, trade in zip(rows, trades, strict=True):
        assert list(row) == TICK_FIELDS
        assert (row["timestamp"], row["trade_price"], row["trade_volume"]) == (
            trade.ms,
            trade.price,
            trade.volume,
        )
        assert row["sequential_id"] == trade.seq and row["ask_bid"] == trade.side
        stamp = format_utc(trade.ms)
        assert (row["trade_date_utc"], row["trade_time_utc"]) == (stamp[:10], stamp[11:])
        prev = history_of(sim_app).prev_close(LIQUID, trade.ms)
        assert prev is not None and row["prev_closing_price"] == prev
        assert row["change_price"] == pytest.approx(trade.price - prev, abs=1e-8)
    assert [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)
    assert rows[0]["timestamp"] <= sim_now_ms


async def test_sequential_id_is_an_exact_json_integer_beyond_2_53(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    response = await sim_client.get("/v1/trades/ticks", params={"market": LIQUID, "count": 5})
    [trade, *_] = history_of(sim_app).trades(LIQUID, before_ms=sim_now_ms + 1, count=5)
    assert trade.seq > 2**53
    assert f'"sequential_id":{trade.seq}' in response.text  # bare digits, no quotes, no exponent
    assert json.loads(response.text)[0]["sequential_id"] == trade.seq


async def test_trades_count_default_one_max_500(sim_client: httpx.AsyncClient) -> None:
    assert len(await get_json(sim_client, "/v1/trades/ticks", market=LIQUID)) == 1
    assert len(await get_json(sim_client, "/v1/trades/ticks", market=LIQUID, count=900)) == 500
    message = await error_of(sim_client, "/v1/trades/ticks", 400, market=LIQUID, count="x")
    assert message == "Type mismatch error. Check the parameters type!"


async def test_cursor_pages_are_contiguous(sim_client: httpx.AsyncClient) -> None:
    whole = await get_json(sim_client, "/v1/trades/ticks", market=LIQUID, count=300)
    first = await get_json(sim_client, "/v1/trades/ticks", market=LIQUID, count=150)
    cursor = first[-1]["sequential_id"]
    second = await get_json(
        sim_client, "/v1/trades/ticks", market=LIQUID, count=150, cursor=str(cursor)
    )
    assert first + second == whole
    assert len({row["sequential_id"] for row in whole}) == 300


async def test_to_within_the_day_in_both_forms(
    sim_client: httpx.AsyncClient, sim_now_ms: int
) -> None:
    compact = await get_json(sim_client, "/v1/trades/ticks", market=LIQUID, count=20, to="063000")
    colons = await get_json(sim_client, "/v1/trades/ticks", market=LIQUID, count=20, to="06:30:00")
    assert compact == colons and len(compact) == 20
    today = format_utc(sim_now_ms)[:10]
    assert all(row["trade_date_utc"] == today for row in compact)
    assert all(row["trade_time_utc"] < "06:30:00" for row in compact)
    message = await error_of(sim_client, "/v1/trades/ticks", 400, market=LIQUID, to="25:00:00")
    assert message == "Invalid parameter. Check the given value!"


async def test_days_ago_selects_a_past_utc_day(
    sim_client: httpx.AsyncClient, sim_now_ms: int
) -> None:
    rows = await get_json(sim_client, "/v1/trades/ticks", market=LIQUID, count=30, days_ago=1)
    yesterday = format_utc(sim_now_ms - DAY_MS)[:10]
    assert len(rows) == 30
    assert all(row["trade_date_utc"] == yesterday for row in rows)
    assert rows[0]["trade_time_utc"] >= "23:00:00"  # from the end of that day backwards
    late = await get_json(
        sim_client, "/v1/trades/ticks", market=LIQUID, days_ago=7, to="120000", count=3
    )
    assert all(r["trade_date_utc"] == format_utc(sim_now_ms - 7 * DAY_MS)[:10] for r in late)
    for bad in ("0", "8"):
        message = await error_of(sim_client, "/v1/trades/ticks", 400, market=LIQUID, days_ago=bad)
        assert message == "Invalid parameter. Check the given value!"


async def test_trades_errors(sim_client: httpx.AsyncClient) -> None:
    assert await error_of(sim_client, "/v1/trades/ticks", 404, market="KRW-NOPE") == (
        "Code not found"
    )
    assert await error_of(sim_client, "/v1/trades/ticks", 400) == (
        "Missing request parameter error. Check the required parameters!"
    )


@pytest.mark.parametrize(
    "cursor", ["99999999999999999999999999", "9223372036854775808", "-1", "1.5", "１", " 7"]
)
async def test_an_absurd_cursor_is_refused_as_upbit_refuses_bad_values(
    sim_client: httpx.AsyncClient, sim_app: Starlette, cursor: str
) -> None:
    """Never walked through (a 26-digit cursor once made the simulator answer 500 and grow
    by 440 MiB): a ``sequential_id`` is a non-negative 64-bit integer, anything else is 400."""
    message = await error_of(sim_client, "/v1/trades/ticks", 400, market=LIQUID, cursor=cursor)
    assert message == "Invalid parameter. Check the given value!"
    assert sim_app.state.sim.stats.by_status[400] == 1
    largest = await get_json(
        sim_client, "/v1/trades/ticks", market=LIQUID, count=3, cursor=str(2**63 - 1)
    )
    assert len(largest) == 3  # the largest sequential_id is a cursor: the latest trades


# -- /v1/ticker, /v1/ticker/all -----------------------------------------------------------------


async def test_ticker_matches_history_with_unsigned_and_signed_change(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    codes = [m.code for m in history_of(sim_app).markets if on_upbit(m, sim_now_ms)][:8]
    rows = await get_json(sim_client, "/v1/ticker", markets=",".join(codes))
    assert [row["market"] for row in rows] == codes
    for row in rows:
        assert list(row) == TICKER_FIELDS
        state = history_of(sim_app).ticker(row["market"], sim_now_ms)
        assert state is not None
        assert row["trade_price"] == state.last.price
        assert row["trade_timestamp"] == state.last.ms and row["timestamp"] == state.ms
        assert (row["opening_price"], row["high_price"], row["low_price"]) == (
            state.day_open,
            state.day_high,
            state.day_low,
        )
        assert row["prev_closing_price"] == state.prev_close
        assert row["acc_trade_volume_24h"] == state.acc_volume_24h
        signed = row["signed_change_price"]
        assert signed == pytest.approx(state.last.price - state.prev_close, abs=1e-8)
        assert row["change_price"] == abs(signed)
        assert row["change_rate"] == abs(row["signed_change_rate"])
        assert row["change"] == ("RISE" if signed > 0 else "FALL" if signed < 0 else "EVEN")
        utc = format_utc(state.last.ms)
        assert row["trade_date"] == utc[:10].replace("-", "")
        assert row["trade_time"] == utc[11:].replace(":", "")
        kst = format_utc(state.last.ms + 9 * 3_600_000)
        assert (row["trade_date_kst"], row["trade_time_kst"]) == (
            kst[:10].replace("-", ""),
            kst[11:].replace(":", ""),
        )


async def test_ticker_accepts_repeated_markets_keys_and_lower_case(
    sim_client: httpx.AsyncClient,
) -> None:
    comma = await sim_client.get("/v1/ticker?markets=KRW-BTC,KRW-ETH")
    repeated = await sim_client.get("/v1/ticker?markets=KRW-BTC&markets=KRW-ETH")
    lower = await sim_client.get("/v1/ticker?markets=krw-btc%2Ckrw-eth")
    assert comma.status_code == 200
    assert repeated.content == comma.content == lower.content


async def test_ticker_errors(sim_client: httpx.AsyncClient) -> None:
    message = await error_of(sim_client, "/v1/ticker", 404, markets="KRW-BTC,KRW-NOPE")
    assert message == "Code not found"
    message = await error_of(sim_client, "/v1/ticker", 400)
    assert message == "Missing request parameter error. Check the required parameters!"


@pytest.mark.parametrize("name", ["quote_currencies", "quoteCurrencies"])
async def test_ticker_all_by_quote_currency(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int, name: str
) -> None:
    rows = await get_json(sim_client, "/v1/ticker/all", **{name: "KRW,BTC"})
    history = history_of(sim_app)
    expected = [
        m.code
        for m in history.markets
        if m.quote in ("KRW", "BTC")
        and on_upbit(m, sim_now_ms)
        and history.ticker(m.code, sim_now_ms) is not None
    ]
    assert [row["market"] for row in rows] == expected
    one = await get_json(sim_client, "/v1/ticker", markets=expected[0])
    assert rows[0] == one[0]
    message = await error_of(sim_client, "/v1/ticker/all", 404, **{name: "KRW,EUR"})
    assert message == "Code not found"  # our choice: Upbit's answer is undocumented


# -- /v1/orderbook and friends ------------------------------------------------------------------


async def test_orderbook_matches_history_in_upbit_rest_shape(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    [row] = await get_json(sim_client, "/v1/orderbook", markets=LIQUID)
    book = history_of(sim_app).orderbook(LIQUID, sim_now_ms, 30)
    assert list(row) == [
        "market",
        "timestamp",
        "total_ask_size",
        "total_bid_size",
        "orderbook_units",
        "level",
    ]
    assert row["timestamp"] == book.ms <= sim_now_ms and row["level"] == 0
    units = row["orderbook_units"]
    assert len(units) == 30
    assert all(list(u) == ["bid_price", "bid_size", "ask_price", "ask_size"] for u in units)
    assert [(u["ask_price"], u["ask_size"]) for u in units] == [tuple(x) for x in book.asks]
    assert [(u["bid_price"], u["bid_size"]) for u in units] == [tuple(x) for x in book.bids]
    asks = [u["ask_price"] for u in units]
    bids = [u["bid_price"] for u in units]
    assert asks == sorted(asks) and bids == sorted(bids, reverse=True) and bids[0] < asks[0]
    assert row["total_ask_size"] == pytest.approx(sum(u["ask_size"] for u in units))
    assert row["total_bid_size"] == pytest.approx(sum(u["bid_size"] for u in units))


@pytest.mark.parametrize(("count", "expected"), [("5", 5), ("1", 1), ("31", 30), ("0", 30)])
async def test_orderbook_count_one_to_thirty_else_thirty(
    sim_client: httpx.AsyncClient, count: str, expected: int
) -> None:
    [row] = await get_json(sim_client, "/v1/orderbook", markets=LIQUID, count=count)
    assert len(row["orderbook_units"]) == expected


async def test_orderbook_errors(sim_client: httpx.AsyncClient) -> None:
    message = await error_of(sim_client, "/v1/orderbook", 400, markets=LIQUID, count="abc")
    assert message == "Type mismatch error. Check the parameters type!"
    assert await error_of(sim_client, "/v1/orderbook", 400) == (
        "Missing request parameter error. Check the required parameters!"
    )
    assert await error_of(sim_client, "/v1/orderbook", 404, markets=f"{LIQUID},KRW-NOPE") == (
        "Code not found"
    )


async def test_thin_books_are_padded_with_zero_slots(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    history = history_of(sim_app)
    listed = [m.code for m in history.markets if on_upbit(m, sim_now_ms)]
    books = {code: history.orderbook(code, sim_now_ms, 30) for code in listed}
    thin = min(listed, key=lambda code: min(len(books[code].asks), len(books[code].bids)))
    book = books[thin]
    assert min(len(book.asks), len(book.bids)) < 30, "the history has no thin book to pad"
    [row] = await get_json(sim_client, "/v1/orderbook", markets=thin)
    units = row["orderbook_units"]
    assert len(units) == 30
    padded_bids = units[len(book.bids) :]
    padded_asks = units[len(book.asks) :]
    assert all(u["bid_price"] == 0 and u["bid_size"] == 0 for u in padded_bids)
    assert all(u["ask_price"] == 0 and u["ask_size"] == 0 for u in padded_asks)


async def test_orderbook_levels_krw_only(sim_client: httpx.AsyncClient, sim_app: Starlette) -> None:
    [instrument] = await get_json(sim_client, "/v1/orderbook/instruments", markets=LIQUID)
    level = instrument["supported_levels"][1]
    [row] = await get_json(sim_client, "/v1/orderbook", markets=LIQUID, level=level, count=5)
    assert row["level"] == float(level)
    units = row["orderbook_units"]
    assert all(u["ask_price"] % float(level) == 0 for u in units)
    assert all(u["bid_price"] % float(level) == 0 for u in units)
    asks = [u["ask_price"] for u in units]
    assert asks == sorted(set(asks))
    btc_quoted = next(m.code for m in history_of(sim_app).markets if m.quote == "BTC")
    assert await get_json(sim_client, "/v1/orderbook", markets=btc_quoted, level=level) == []
    assert await get_json(sim_client, "/v1/orderbook", markets=LIQUID, level="7") == []


async def test_instruments_give_tick_size_and_levels_as_strings(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    history = history_of(sim_app)
    codes = [m.code for m in history.markets if on_upbit(m, sim_now_ms)]
    rows = await get_json(sim_client, "/v1/orderbook/instruments", markets=",".join(codes))
    assert [row["market"] for row in rows] == codes
    for row in rows:
        market = history.market(row["market"])
        last = history.last_trade(row["market"], sim_now_ms)
        assert market is not None and last is not None
        assert list(row) == ["market", "quote_currency", "tick_size", "supported_levels"]
        assert row["quote_currency"] == market.quote
        price = last.price
        assert isinstance(row["tick_size"], str)
        assert float(row["tick_size"]) == tick_size(market.quote, price)
        assert "e" not in row["tick_size"]
        assert all(isinstance(level, str) for level in row["supported_levels"])
        assert row["supported_levels"][0] == "0"
        if market.quote != "KRW":
            assert row["supported_levels"] == ["0"]
    assert await error_of(sim_client, "/v1/orderbook/instruments", 400) == (
        "Missing request parameter error. Check the required parameters!"
    )
    levels = await get_json(sim_client, "/v1/orderbook/supported_levels")
    by_code = {row["market"]: row for row in rows}
    for entry in levels:
        assert [float(x) for x in by_code[entry["market"]]["supported_levels"]] == [
            float(x) for x in entry["supported_levels"]
        ]
        assert all(isinstance(x, int | float) for x in entry["supported_levels"])


# -- headers, unrouted paths, determinism -------------------------------------------------------

QUOTATION_URLS = [
    ("/v1/market/all", "market"),
    ("/v1/candles/minutes/1?market=KRW-BTC", "candles"),
    ("/v1/candles/days?market=KRW-NOPE", "candles"),
    ("/v1/trades/ticks?market=KRW-BTC", "trade"),
    ("/v1/ticker?markets=KRW-BTC", "ticker"),
    ("/v1/ticker/all?quote_currencies=KRW", "ticker"),
    ("/v1/orderbook?markets=KRW-BTC", "orderbook"),
    ("/v1/orderbook?count=x&markets=KRW-BTC", "orderbook"),
    ("/v1/orderbook/instruments?markets=KRW-BTC", "orderbook"),
    ("/v1/orderbook/supported_levels", "orderbook"),
]


@pytest.mark.parametrize(("url", "group"), QUOTATION_URLS)
async def test_every_quotation_reply_carries_remaining_req(
    sim_client: httpx.AsyncClient, url: str, group: str
) -> None:
    response = await sim_client.get(url)
    assert response.headers["Remaining-Req"].startswith(f"group={group}; min=600; sec=")
    assert response.headers["limit-by-ip"] == "Yes"
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("url", ["/v1/nope", "/v2/ticker", "/v1/ticker/", "/v1/candles/hours"])
async def test_unrouted_paths_get_the_gateway_404(sim_client: httpx.AsyncClient, url: str) -> None:
    response = await sim_client.get(url)
    assert response.status_code == 404
    assert response.json() == {
        "error": {"name": "not_found", "message": "no Route matched with those values"}
    }
    assert "Remaining-Req" not in response.headers


@pytest.mark.parametrize(
    ("method", "url"),
    [("POST", "/v1/candles/minutes/1"), ("DELETE", "/v1/ticker"), ("PUT", "/v1/market/all")],
)
async def test_a_wrong_method_on_an_upbit_path_gets_the_gateway_404(
    sim_app: Starlette, sim_client: httpx.AsyncClient, method: str, url: str
) -> None:
    # Upbit's Kong gateway answers a method a route does not take as an unrouted path.
    response = await sim_client.request(method, url)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "no Route matched with those values"
    assert "Remaining-Req" not in response.headers
    assert sim_app.state.sim.stats.snapshot()["status"] == {"404": 1}


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("GET", "/sim/reset", {"POST"}),
        ("DELETE", "/sim/faults", {"GET", "HEAD", "POST"}),  # two methods, one path
    ],
)
async def test_a_wrong_method_on_a_sim_path_is_405_naming_the_allowed_ones(
    sim_app: Starlette, sim_client: httpx.AsyncClient, method: str, url: str, allowed: set[str]
) -> None:
    response = await sim_client.request(method, url)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == allowed
    error = response.json()["error"]
    assert error["name"] == 405
    assert f"{method} {url}" in error["message"]
    assert all(name in error["message"] for name in allowed), error["message"]
    assert "Remaining-Req" not in response.headers
    assert sim_app.state.sim.stats.snapshot()["status"] == {"405": 1}


HISTORICAL = [
    "/v1/candles/minutes/1?market=KRW-BTC&count=200&to=2026-07-01T00:00:00",
    "/v1/candles/days?market=KRW-ETH&count=200&to=2026-07-01T00:00:00",
    "/v1/candles/weeks?market=KRW-BTC&count=50&to=2026-07-01T00:00:00",
    "/v1/trades/ticks?market=KRW-BTC&count=500&days_ago=3",
    "/v1/ticker?markets=KRW-BTC,KRW-ETH",
    "/v1/orderbook?markets=KRW-BTC",
]


async def test_same_seed_gives_byte_identical_answers(sim_now_ms: int) -> None:
    async def bodies(seed: int) -> list[bytes]:
        app = create_app(SimConfig(seed=seed, rate_limit=0), clock=lambda: sim_now_ms)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            return [(await client.get(url)).content for url in HISTORICAL]

    first, again, other = await bodies(7), await bodies(7), await bodies(8)
    assert first == again
    assert all(body.startswith(b"[{") for body in first)
    assert first[0] != other[0]
