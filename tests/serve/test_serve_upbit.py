"""``/v1/…`` of a real ``marketspine serve`` process against the simulator it fronts: the same
JSON (fields in the same order), the same errors, Upbit's ``Remaining-Req`` header."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from serve_support import ServeProcess, sim_stats

pytestmark = pytest.mark.process

REMAINING = re.compile(r"group=([a-z\-]+); min=([0-9]+); sec=([0-9]+)")  # pyupbit's regex

SAME_AS_UPBIT = [
    ("/v1/market/all", {}),
    ("/v1/market/all", {"isDetails": "true"}),
    ("/v1/market/all", {"is_details": "true"}),
    ("/v1/candles/minutes/1", {"market": "KRW-BTC", "count": 200}),
    ("/v1/candles/minutes/5", {"market": "KRW-ETH", "count": 37, "to": "2026-07-30T05:00:00"}),
    ("/v1/candles/minutes/240", {"market": "KRW-BTC", "count": 200, "to": "2026-07-29 12:00:00"}),
    ("/v1/candles/seconds", {"market": "KRW-BTC", "count": 50}),
    ("/v1/candles/days", {"market": "KRW-BTC", "count": 30}),
    ("/v1/candles/days", {"market": "KRW-XRP", "count": 200, "to": "2026-07-01T09:00:00+09:00"}),
    ("/v1/candles/weeks", {"market": "KRW-BTC", "count": 10}),
    ("/v1/candles/months", {"market": "KRW-BTC", "count": 5}),
    ("/v1/candles/years", {"market": "KRW-BTC", "count": 2}),
    ("/v1/candles/days/", {"market": "KRW-BTC"}),
    ("/v1/candles/minutes/1", {"market": "KRW-BTC", "count": 5, "to": "2020-01-01T00:00:00"}),
    ("/v1/candles/minutes/1", {"market": "KRW-BTC", "count": 5, "to": "1970-01-01T00:00:00"}),
    ("/v1/ticker", {"markets": "KRW-BTC,KRW-ETH"}),
    ("/v1/ticker/all", {"quote_currencies": "KRW,BTC"}),
    ("/v1/orderbook", {"markets": "KRW-BTC,KRW-ETH"}),
    ("/v1/orderbook", {"markets": "KRW-BTC", "count": 5}),
    ("/v1/orderbook", {"markets": "KRW-BTC", "level": 10000}),
    ("/v1/orderbook/instruments", {"markets": "KRW-BTC,BTC-ETH"}),
    ("/v1/orderbook/supported_levels", {}),
    ("/v1/trades/ticks", {"market": "KRW-BTC", "count": 100}),
    ("/v1/trades/ticks", {"market": "KRW-BTC", "count": 10, "days_ago": 2}),
]


def ordered(value: Any) -> Any:
    """Rows as lists of (key, value) pairs, so field order counts in comparisons."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


@pytest.mark.parametrize(("path", "params"), SAME_AS_UPBIT)
def test_same_json_as_upstream(
    serve: ServeProcess, fixed_sim: str, path: str, params: dict[str, Any]
) -> None:
    ours = serve.get(path, **params)
    theirs = httpx.get(fixed_sim + path, params=params, timeout=10)
    assert ours.status_code == theirs.status_code == 200, ours.text
    assert ordered(ours.json()) == ordered(theirs.json())
    group, _, sec = REMAINING.fullmatch(ours.headers["Remaining-Req"]).groups()  # type: ignore[union-attr]
    assert group == theirs.headers["Remaining-Req"].split(";")[0].removeprefix("group=")
    assert 0 <= int(sec) <= 9
    assert ours.headers["X-Marketspine-Source"] in {
        "memory",
        "database",
        "live",
        "upstream",
        "mixed",
    }


MISSING = "Missing request parameter error. Check the required parameters!"
MISMATCH = "Type mismatch error. Check the parameters type!"
WRONG = "Invalid parameter. Check the given value!"
ERRORS = [
    ("/v1/candles/minutes/7", {"market": "KRW-BTC"}, 400, "specified unit is not valid."),
    ("/v1/candles/days", {}, 400, MISSING),
    ("/v1/candles/days", {"market": "KRW-NOPE"}, 404, "Code not found"),
    ("/v1/candles/days", {"market": "KRW-BTC,KRW-ETH"}, 404, "Code not found"),
    ("/v1/candles/days", {"market": "KRW-BTC", "count": "abc"}, 400, MISMATCH),
    ("/v1/candles/days", {"market": "KRW-BTC", "to": "2026-07-01 x"}, 400, WRONG),
    ("/v1/ticker", {"markets": "KRW-BTC,KRW-NOPE"}, 404, "Code not found"),
    ("/v1/ticker", {}, 400, MISSING),
    ("/v1/orderbook", {"markets": "KRW-BTC", "count": "x"}, 400, MISMATCH),
    ("/v1/trades/ticks", {"market": "KRW-NOPE"}, 404, "Code not found"),
    ("/v1/candles/days", {"market": "KRW-NOPE", "to": "2000-01-01"}, 404, "Code not found"),
    ("/v1/trades/ticks", {"market": "KRW-BTC", "cursor": "9" * 26}, 400, WRONG),
    ("/v1/trades/ticks", {"market": "KRW-BTC", "to": "246000"}, 400, WRONG),
    ("/v1/trades/ticks", {"market": "KRW-BTC", "days_ago": "x"}, 400, MISMATCH),
    ("/v1/ticker/all", {"quote_currencies": "KRW-" * 10}, 404, "Code not found"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "params", "status", "message"), ERRORS)
def test_same_errors_as_upstream(
    serve: ServeProcess,
    fixed_sim: str,
    path: str,
    params: dict[str, Any],
    status: int,
    message: str,
) -> None:
    ours = serve.get(path, **params)
    theirs = httpx.get(fixed_sim + path, params=params, timeout=10)
    assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())
    assert ours.json() == {"error": {"name": status, "message": message}}
    assert REMAINING.fullmatch(ours.headers["Remaining-Req"])


def test_unrouted_path_answers_like_upbits_gateway(serve: ServeProcess) -> None:
    response = serve.get("/v1/nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"name": "not_found", "message": "no Route matched with those values"}
    }
    assert "Remaining-Req" not in response.headers


def test_closed_candles_are_fetched_once_then_answered_from_cache(
    serve: ServeProcess, fixed_sim: str
) -> None:
    params: dict[str, Any] = {"market": "KRW-SOL", "count": 200, "to": "2026-07-28T00:00:00"}
    first = serve.get("/v1/candles/minutes/3", **params)
    before = sim_stats(fixed_sim)["requests"]["by_group"].get("candles", 0)
    again = serve.get("/v1/candles/minutes/3", **params)
    after = sim_stats(fixed_sim)["requests"]["by_group"].get("candles", 0)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and len(again.json()) == 200
    assert after == before
    assert again.headers["X-Marketspine-Source"] == "memory"


def test_an_origin_header_is_never_forwarded(serve: ServeProcess, fixed_sim: str) -> None:
    # Upbit allows one request carrying Origin per 10 s: forwarded, the second would be a 429.
    before = sim_stats(fixed_sim)
    for code in ("KRW-ADA", "KRW-DOGE", "KRW-TRX"):
        response = httpx.get(
            serve.url + "/v1/ticker",
            params={"markets": code},
            headers={"Origin": "https://example.test"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
    after = sim_stats(fixed_sim)
    assert after["requests"]["by_group"].get("origin", 0) == before["requests"]["by_group"].get(
        "origin", 0
    )
    assert after["429"] == before["429"]
