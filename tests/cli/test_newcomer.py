"""What a newcomer tripped on, walking the README: a port out of range, an unusable
``serve --db``, a single market string or JSON of the wrong type to ``POST /api/backfill``,
``/api/candles`` hiding that a range is unserved, a non-boolean ``fill``, a deeply nested
WebSocket request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from clitools import minute_db, run_in_process
from starlette.applications import Starlette

from marketspine._cli.main import main
from marketspine._serve.app import create_service_app
from marketspine._serve.service import ServeService
from marketspine._upbit.ws_format import WsRequestError, parse_request

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "args",
    [
        ("sim", "--port", "99999"),
        ("sim", "--port", "-5"),
        ("serve", "--upstream", "sim", "--port", "70000"),
    ],
)
def test_a_port_out_of_range_is_a_usage_error(args: tuple[str, ...], tmp_path: Path) -> None:
    db = ["--db", str(tmp_path / "s.db")] if args[0] == "serve" else []
    result = run_in_process(*args, *db)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--port" in result.stderr and "0<=x<=65535" in result.stderr
    assert not (tmp_path / "s.db").exists()


def test_serve_on_an_unusable_db_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    # In-process (the console script's own entry point): it must fail before serving.
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--upstream", "sim", "--port", "0", "--db", str(folder)])
    out, err = capsys.readouterr()
    assert exited.value.code == 2, err
    assert "Traceback" not in err
    assert err.startswith("marketspine: error: cannot open the candle database")
    assert len(err.strip().splitlines()) == 1
    assert "serving on" not in out
    # Nothing written beside it either (the generated admin token came first before).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder"]


@pytest.fixture
async def http(sim_app: Starlette, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with ServeService(
        "http://sim",
        tmp_path / "serve.db",
        admin_token="t",
        transport=httpx.ASGITransport(app=sim_app),
        warmup_every_s=-1,
        live_on_demand=False,
    ) as service:
        app = create_service_app(service)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://serve",
            timeout=30,
            headers={"Authorization": "Bearer t"},  # /api needs a token
        ) as client:
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
        # Epoch seconds, not 1970-01-20 in milliseconds (which started a job before).
        ({**_DAY, "since": 1_700_000_000}, "can only be epoch seconds"),
    ],
)
async def test_backfill_refuses_json_values_of_the_wrong_type(
    http: httpx.AsyncClient, body: dict[str, object], complaint: str
) -> None:
    answer = await http.post("/api/backfill", json=body)
    assert answer.status_code == 400, answer.text  # was 500 ('float' object has no ...)
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


def test_a_deeply_nested_websocket_request_is_wrong_format() -> None:
    with pytest.raises(WsRequestError) as caught:
        parse_request("[" * 10_000)
    assert caught.value.name == "WRONG_FORMAT"


def test_export_of_nothing_without_since_reads_as_a_sentence(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    minute_db(db, 1_767_225_600_000, 3)  # 2026-01-01, three 1m candles
    result = run_in_process(
        "export", "KRW-BTC", "-t", "1M", "--db", str(db), "--out", str(tmp_path / "m.csv")
    )
    assert result.returncode == 3, result.stderr
    assert "nothing stored for KRW-BTC 1M before 20" in result.stderr  # not "in before"


@pytest.mark.parametrize(
    ("span", "complaint"),
    [
        # No end given: "before end" named an end nobody gave.
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
