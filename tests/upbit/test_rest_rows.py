"""The one writer of Upbit's REST rows (``_upbit.rest_rows``): every kind of row it writes
decodes back, through the client's own REST decoders, to the record it was written from."""

from __future__ import annotations

import msgspec
import pytest

from marketspine._base.time import parse_time
from marketspine._base.timeframes import TIMEFRAMES, parse_timeframe
from marketspine._upbit.rest import (
    decode_candles,
    decode_instruments,
    decode_markets,
    decode_orderbooks,
    decode_tickers,
    decode_trades,
)
from marketspine._upbit.rest_rows import (
    CAUTION_KEYS,
    CandleRows,
    candle_row,
    instrument_row,
    market_row,
    orderbook_row,
    supported_levels_row,
    ticker_row,
    trade_row,
)
from marketspine.records import (
    Candle,
    Instrument,
    MarketInfo,
    Orderbook,
    OrderbookUnit,
    Ticker,
    Trade,
)

T0 = parse_time("2026-07-30T07:41:37Z")
encode = msgspec.json.encode


@pytest.mark.parametrize("name", list(TIMEFRAMES))
def test_a_candle_row_decodes_to_its_candle(name: str) -> None:
    tf = TIMEFRAMES[name]
    start = tf.floor(T0)
    before = tf.shift(start, -1)
    candles = [
        Candle("KRW-BTC", name, before, 100.0, 120.0, 90.0, 110.0, 2.5, 260.0, before + 500),
        Candle("KRW-BTC", name, start, 110.0, 111.0, 95.5, 96.0, 0.125, 12.0, T0),
    ]
    page = CandleRows().page(candles, tf, previous=None, forming_start_ms=start)
    assert decode_candles(page, tf) == candles[::-1]


def test_a_candle_row_has_upbits_fields_per_kind_in_order() -> None:
    base = [
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
    extra = {
        "1s": [],
        "5m": ["unit"],
        "1d": ["prev_closing_price", "change_price", "change_rate", "converted_trade_price"],
        "1w": ["first_day_of_period"],
        "1M": ["first_day_of_period"],
        "1y": ["first_day_of_period"],
    }
    for name, fields in extra.items():
        tf = parse_timeframe(name)
        row = candle_row("BTC-ETH", tf, tf.floor(T0), 1.0, 2.0, 0.5, 1.5, T0, 3.0, 2.0, 1.2, 3.1)
        assert list(row) == base + fields, name
    day = candle_row("KRW-BTC", parse_timeframe("1d"), 0, 100.0, 110.0, 90.0, 105.0, 0, 1.0, 1.0)
    assert (day["prev_closing_price"], day["change_price"], day["change_rate"]) == (
        100.0,
        5.0,
        0.05,
    )
    assert "converted_trade_price" not in day


def test_a_trade_row_decodes_to_its_trade() -> None:
    trade = Trade(
        "KRW-BTC", T0 + 779, 91361000.0, 0.01275549, "ASK", 17853950437790001, 91424000.0, -63000.0
    )
    assert decode_trades(encode([trade_row(trade)])) == [trade]  # fmt: skip


def test_a_ticker_row_decodes_to_its_ticker() -> None:
    ticker = Ticker(
        "KRW-BTC",
        T0 + 5,
        T0,
        91361000.0,
        91400000.0,
        91500000.0,
        91000000.0,
        91424000.0,
        "FALL",
        -63000.0,
        -0.0006890969,
        0.01275549,
        1234.5,
        112233445566.7,
        2345.6,
        212233445566.7,
        163325000.0,
        "2025-10-06",
        70000000.0,
        "2025-07-30",
    )
    assert decode_tickers(encode([ticker_row(ticker)])) == [ticker]


def test_an_orderbook_row_decodes_to_its_book() -> None:
    units = (
        OrderbookUnit(116539000.0, 0.02054761, 116538000.0, 0.08120946),
        OrderbookUnit(116542000.0, 0.5, 116537000.0, 1.25),
    )
    book = Orderbook("KRW-BTC", T0, 0.52054761, 1.33120946, units, 0.0)
    assert decode_orderbooks(encode([orderbook_row(book, len(units))])) == [book]
    # A deeper ask pads with zero slots (JSON integers, as Upbit writes them).
    padded = orderbook_row(book, 3)["orderbook_units"][2]
    assert encode(padded) == b'{"bid_price":0,"bid_size":0,"ask_price":0,"ask_size":0}'


def test_market_rows_decode_to_their_markets() -> None:
    listed = MarketInfo("KRW-BTC", "비트코인", "Bitcoin", True, dict.fromkeys(CAUTION_KEYS, False))
    assert decode_markets(encode([market_row(listed, details=True)])) == [listed]
    plain = MarketInfo("SGD-BTC", None, "Bitcoin", False, {})
    assert decode_markets(encode([market_row(plain, details=False)])) == [plain]
    # The regional sites' older field: a warning, no caution flags.
    abroad = market_row(MarketInfo("SGD-XRP", None, "Ripple", True, {}), details=True, korea=False)
    assert abroad == {"market": "SGD-XRP", "english_name": "Ripple", "market_warning": "CAUTION"}
    assert decode_markets(encode([abroad])) == [MarketInfo("SGD-XRP", None, "Ripple", True, {})]


def test_an_instrument_row_decodes_to_its_instrument() -> None:
    instrument = Instrument("BTC-ETH", "BTC", 1e-08, (0.0, 1e-07, 1e-06))
    row = instrument_row(instrument)
    assert row["tick_size"] == "0.00000001"
    assert decode_instruments(encode([row])) == [instrument]
    assert supported_levels_row("KRW-BTC", (0.0, 10000.0, 0.5)) == {
        "market": "KRW-BTC",
        "supported_levels": [0, 10000, 0.5],
    }
