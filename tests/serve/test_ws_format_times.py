"""The trade and ticker frames' date and time texts (written without strftime, per frame)
equal strftime's for any time."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from marketspine._base.time import from_ms
from marketspine._serve.ws_format import render
from marketspine.records import Ticker, Trade

ms_values = st.integers(min_value=0, max_value=4_102_444_800_000)  # to 2100


@given(ms=ms_values)
def test_trade_date_and_time(ms: int) -> None:
    trade = Trade("KRW-BTC", ms, 1.0, 1.0, "BID", 1, 1.0, 0.0)
    frame = json.loads(render(trade, simple=False, stream_type="REALTIME"))
    moment = from_ms(ms)
    assert frame["trade_date"] == moment.strftime("%Y-%m-%d")
    assert frame["trade_time"] == moment.strftime("%H:%M:%S")


@given(ms=ms_values)
def test_ticker_trade_date_and_time(ms: int) -> None:
    ticker = Ticker("KRW-BTC", ms, ms, 1.0, 1.0, 1.0, 1.0, 1.0, "EVEN", 0.0, 0.0, 1.0, 1.0,
                    1.0, 1.0, 1.0, 1.0, "2026-01-01", 1.0, "2026-01-01")  # fmt: skip
    frame = json.loads(render(ticker, simple=False, stream_type="REALTIME"))
    moment = from_ms(ms)
    assert frame["trade_date"] == moment.strftime("%Y%m%d")
    assert frame["trade_time"] == moment.strftime("%H%M%S")
