"""``serve``'s ``/api`` input checks, in-process on the in-process simulator: a single
market string to ``POST /api/backfill`` is that market, JSON of the wrong type is a 400
naming the value (no job started), ``/api/candles`` says when a range is unserved, refuses a
flag that is not boolean, says why a range cannot be with its times, and takes times as ISO
8601 or epoch milliseconds (a 400 naming anything else)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from serve_support import in_process_serve, service_client
from starlette.applications import Starlette

from marketspine._base.time import format_utc, parse_time

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def http(sim_app: Starlette, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        in_process_serve(sim_app, tmp_path / "serve.db") as service,
        service_client(service, headers={"Authorization": "Bearer t"}) as client,  # /api: a token
    ):
        yield client


async def test_backfill_of_one_market_string_is_that_market(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/api/backfill",
        json={"markets": "krw-btc", "timeframe": "1d", "since": "2026-01-01"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["markets"] == ["KRW-BTC"]


_DAY = {"markets": ["KRW-BTC"], "timeframe": "1d"}


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({**_DAY, "markets": 5, "since": "2026-01-01"}, "invalid markets 5 (int)"),
        ({**_DAY, "markets": ["KRW-BTC", 7], "since": "2026-01-01"}, "invalid item of markets 7"),
        ({**_DAY, "timeframe": 5, "since": "2026-01-01"}, "invalid timeframe 5 (int)"),
        ({**_DAY, "since": 1.5}, "invalid since 1.5 (float)"),
        ({**_DAY, "since": ["2026-01-01"]}, "invalid since ['2026-01-01'] (list)"),
        ({**_DAY, "since": True}, "invalid since True (bool)"),
        ({**_DAY, "since": None}, "since is required"),
        ({**_DAY, "since": "2026-01-01", "until": {}}, "invalid until {} (dict)"),
        # Epoch seconds, not 1970-01-20 in milliseconds.
        ({**_DAY, "since": 1_700_000_000}, "can only be epoch seconds"),
    ],
)
async def test_backfill_refuses_json_values_of_the_wrong_type(
    http: httpx.AsyncClient, body: dict[str, object], complaint: str
) -> None:
    answer = await http.post("/api/backfill", json=body)
    assert answer.status_code == 400, answer.text  # bad input, not a 500
    assert complaint in answer.json()["error"]["message"]
    assert (await http.get("/api/backfill")).json() == []  # no job started


async def test_api_candles_says_when_a_range_is_unserved(http: httpx.AsyncClient) -> None:
    answer = await http.get(
        "/api/candles",
        params={
            "market": "KRW-BTC",
            "timeframe": "1s",
            "start": "2020-01-01",
            "end": "2020-01-01T00:10:00",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["candles"] == []
    assert body["meta"]["unserved_before"] is not None  # unknown, not empty
    assert body["meta"]["delisted"] is False


@pytest.mark.parametrize("flag", ["fill", "closed_only"])
async def test_api_candles_refuses_a_flag_that_is_not_boolean(
    http: httpx.AsyncClient, flag: str
) -> None:
    answer = await http.get(
        "/api/candles", params={"market": "KRW-BTC", "timeframe": "1m", "count": "2", flag: "maybe"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == f"{flag} must be true or false, got 'maybe'"


@pytest.mark.parametrize(
    ("span", "complaint"),
    [
        # No end given: the complaint names upstream's now, not an end nobody gave.
        (
            {"start": "2030-01-01"},
            "start (2030-01-01T00:00:00Z) lies in the future: upstream's now",
        ),
        (
            {"start": "2026-02-01", "end": "2026-01-01"},
            "start (2026-02-01T00:00:00Z) must be before end (2026-01-01T00:00:00Z)",
        ),
    ],
)
async def test_a_range_that_cannot_be_says_why_with_its_times(
    http: httpx.AsyncClient, span: dict[str, str], complaint: str
) -> None:
    answer = await http.get("/api/candles", params={"market": "KRW-BTC", "timeframe": "1m", **span})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"].startswith(complaint)


async def test_api_candles_takes_epoch_milliseconds_as_documented(
    http: httpx.AsyncClient,
) -> None:
    """``start``/``end`` are "ISO 8601 or epoch ms" (OpenAPI): digits are epoch
    milliseconds and answer the very candles their ISO 8601 spelling does."""
    recent = await http.get(
        "/api/candles", params={"market": "KRW-BTC", "timeframe": "1m", "count": "5"}
    )
    assert recent.status_code == 200, recent.text
    times = [c["time_utc"] for c in recent.json()["candles"]]
    first, last = parse_time(times[0].rstrip("Z")), parse_time(times[-2].rstrip("Z"))
    iso = await http.get(
        "/api/candles",
        params={
            "market": "KRW-BTC",
            "timeframe": "1m",
            "start": format_utc(first),
            "end": format_utc(last),
        },
    )
    epoch = await http.get(
        "/api/candles",
        params={"market": "KRW-BTC", "timeframe": "1m", "start": str(first), "end": str(last)},
    )
    assert iso.status_code == epoch.status_code == 200, epoch.text
    assert [c["time_utc"] for c in epoch.json()["candles"]] == times[:-2]
    assert epoch.json()["candles"] == iso.json()["candles"]


async def test_api_candles_keeps_a_basic_iso_date_in_digits_a_date(
    http: httpx.AsyncClient,
) -> None:
    day = {"market": "KRW-BTC", "timeframe": "1d", "end": "2026-01-05"}
    basic = await http.get("/api/candles", params={**day, "start": "20260101"})
    extended = await http.get("/api/candles", params={**day, "start": "2026-01-01"})
    assert basic.status_code == extended.status_code == 200, basic.text
    assert basic.json()["candles"] == extended.json()["candles"]
    assert basic.json()["candles"][0]["time_utc"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("start", "complaint"),
    [
        ("1700000000", "invalid start 1700000000 (int): an int is epoch milliseconds"),
        ("yesterday", "invalid start 'yesterday'"),
        ("1.7e12", "invalid start '1.7e12'"),
        ("-1700000000000", "invalid start '-1700000000000'"),
    ],
)
async def test_api_candles_refuses_a_time_that_is_neither_iso_nor_epoch_ms(
    http: httpx.AsyncClient, start: str, complaint: str
) -> None:
    answer = await http.get(
        "/api/candles", params={"market": "KRW-BTC", "timeframe": "1m", "start": start}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"].startswith(complaint)
