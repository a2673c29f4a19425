"""Through serve, 1-second candles older than Upbit's three months answer as Upbit does:
an empty list, not an error and not invented rows."""

from __future__ import annotations

import pytest
from helpers import SIM_NOW_MS
from serve_support import ServeProcess

from marketspine._base.time import format_utc

pytestmark = pytest.mark.process

DAY_MS = 86_400_000


def test_seconds_candles_beyond_three_months_are_an_empty_list(serve: ServeProcess) -> None:
    old = serve.get(
        "/v1/candles/seconds", market="KRW-BTC", count=5, to=format_utc(SIM_NOW_MS - 100 * DAY_MS)
    )
    assert old.status_code == 200, old.text
    assert old.json() == []
    recent = serve.get(
        "/v1/candles/seconds", market="KRW-BTC", count=5, to=format_utc(SIM_NOW_MS - 3_600_000)
    )
    assert recent.status_code == 200, recent.text
    rows = recent.json()
    assert 1 <= len(rows) <= 5 and all(r["market"] == "KRW-BTC" for r in rows)
