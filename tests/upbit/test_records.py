"""Decoding Upbit's wire JSON into records: REST and WebSocket give the same record, the
WebSocket's adding the fields only it sends.

Payloads are the live captures quoted in API.md Appendix A.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from marketspine._base.time import parse_time
from marketspine._base.timeframes import parse_timeframe
from marketspine._upbit.rest import (
    decode_candles,
    decode_instruments,
    decode_markets,
    decode_orderbooks,
    decode_tickers,
    decode_trades,
)
from marketspine._upbit.ws import decode_ws, decode_ws_frame
from marketspine.errors import UpstreamError
from marketspine.records import (
    Candle,
    Instrument,
    MarketInfo,
    Orderbook,
    OrderbookUnit,
    Ticker,
    Trade,
    WsError,
    WsStatus,
)

REST_TRADE = b"""[{"market":"KRW-BTC","trade_date_utc":"2026-07-30","trade_time_utc":"07:04:03",
 "timestamp":1785395043779,"trade_price":91361000.0,"trade_volume":0.01275549,
 "prev_closing_price":91424000.0,"change_price":-63000.0,"ask_bid":"ASK",
 "sequential_id":17853950437790001}]"""

WS_TRADE_DEFAULT = b"""{"type":"trade","code":"KRW-BTC","timestamp":1785395043831,
 "trade_date":"2026-07-30","trade_time":"07:04:03","trade_timestamp":1785395043779,
 "trade_price":91361000.0,"trade_volume":0.01275549,"ask_bid":"ASK",
 "prev_closing_price":91424000.0,"change":"FALL","change_price":63000.0,
 "sequential_id":17853950437790001,"best_ask_price":91370000,"best_ask_size":0.0070459,
 "best_bid_price":91361000,"best_bid_size":0.00196362,"stream_type":"REALTIME"}"""

REST_TICKER = b"""[{"market":"KRW-BTC","trade_date":"20260730","trade_time":"074100",
 "trade_date_kst":"20260730","trade_time_kst":"164100","trade_timestamp":1785397260652,
 "opening_price":91374000.0,"high_price":92119000.0,"low_price":90888000.0,
 "trade_price":91200000.0,"prev_closing_price":91424000.0,"change":"FALL",
 "change_price":224000.0,"change_rate":0.0024501225,"signed_change_price":-224000.0,
 "signed_change_rate":-0.0024501225,"trade_volume":0.00016456,
 "acc_trade_price":27800806282.39862,"acc_trade_price_24h":74674126733.71954,
 "acc_trade_volume":304.11940843,"acc_trade_volume_24h":814.34496604,
 "highest_52_week_price":179869000.0,"highest_52_week_date":"2025-10-09",
 "lowest_52_week_price":88770000.0,"lowest_52_week_date":"2026-07-01",
 "timestamp":1785397260707}]"""

DAY_CANDLE = b"""[{"market":"KRW-BTC","candle_date_time_utc":"2026-07-08T00:00:00",
 "candle_date_time_kst":"2026-07-08T09:00:00","opening_price":94950000.0,
 "high_price":95444000.0,"low_price":94100000.0,"trade_price":94237000.0,
 "timestamp":1783477656719,"candle_acc_trade_price":12700757562.77739,
 "candle_acc_trade_volume":134.10911099,"prev_closing_price":94922000.0,
 "change_price":-685000.0,"change_rate":-0.0072164514}]"""

ORDERBOOK_SNAPSHOT_DEFAULT = (
    b'{"type":"orderbook","code":"KRW-BTC","timestamp":1790134742106,'
    b'"total_ask_size":2.51469375,"total_bid_size":1.63815297,"orderbook_units":'
    b'[{"ask_price":1.16539E8,"bid_price":1.16538E8,"ask_size":0.02054761,'
    b'"bid_size":0.08120946},{"ask_price":1.16542E8,"bid_price":1.16537E8,'
    b'"ask_size":0.00077720,"bid_size":0.01129382}],"stream_type":"SNAPSHOT","level":0}'
)


def test_rest_trade_keeps_the_17_digit_sequential_id_exact() -> None:
    (trade,) = decode_trades(REST_TRADE)
    assert trade.seq == 17853950437790001
    assert trade.seq > 2**53  # a float could not hold it
    assert trade.seq != int(float(trade.seq))


# The fields only the WebSocket sends, None in a record decoded from REST.
WS_ONLY_TRADE = dict.fromkeys(
    ("best_ask_price", "best_ask_size", "best_bid_price", "best_bid_size")
)
WS_ONLY_TICKER = dict.fromkeys(
    ("side", "acc_ask_volume", "acc_bid_volume", "market_state", "delisting_date")
)


def test_ws_trade_default_equals_rest_trade_with_signed_change() -> None:
    (rest,) = decode_trades(REST_TRADE)
    ws = decode_ws(WS_TRADE_DEFAULT)
    assert isinstance(ws, Trade)
    assert msgspec.structs.replace(ws, **WS_ONLY_TRADE) == rest
    assert ws.change_price == -63000.0
    # The WebSocket adds the book's best quotes at the trade; REST has none.
    assert (ws.best_ask_price, ws.best_ask_size) == (91370000.0, 0.0070459)
    assert (ws.best_bid_price, ws.best_bid_size) == (91361000.0, 0.00196362)
    assert rest.best_ask_price is rest.best_ask_size is None
    assert rest.best_bid_price is rest.best_bid_size is None
    assert ws != rest  # records compare every field: a trade's identity is (market, seq)


def test_ws_trade_without_best_quotes_or_side_still_decodes() -> None:
    """Frames from before Upbit added best_* (2020) lack them; a missing side is BID."""
    frame = json.loads(WS_TRADE_DEFAULT)
    for key in ("best_ask_price", "best_ask_size", "best_bid_price", "best_bid_size", "ask_bid"):
        del frame[key]
    trade = decode_ws(json.dumps(frame).encode())
    assert isinstance(trade, Trade)
    assert trade.side == "BID" and trade.best_ask_price is None and trade.best_bid_size is None


def test_ws_trade_simple_equals_default() -> None:
    default = json.loads(WS_TRADE_DEFAULT)
    keys = {
        "type": "ty", "code": "cd", "timestamp": "tms", "trade_date": "td",
        "trade_time": "ttm", "trade_timestamp": "ttms", "trade_price": "tp",
        "trade_volume": "tv", "ask_bid": "ab", "prev_closing_price": "pcp", "change": "c",
        "change_price": "cp", "sequential_id": "sid", "best_ask_price": "bap",
        "best_ask_size": "bas", "best_bid_price": "bbp", "best_bid_size": "bbs",
        "stream_type": "st",
    }  # fmt: skip
    simple = {keys[k]: v for k, v in default.items()}
    # json.dumps would route the 17-digit id through Python's int, which stays exact.
    frame = json.dumps(simple).encode()
    assert decode_ws(frame) == decode_ws(WS_TRADE_DEFAULT)


@pytest.mark.parametrize("fmt", ["DEFAULT", "SIMPLE"])
@pytest.mark.parametrize("stream_type", ["SNAPSHOT", "REALTIME"])
def test_ws_frames_say_whether_they_are_a_snapshot(fmt: str, stream_type: str) -> None:
    frame = json.loads(WS_TRADE_DEFAULT)
    frame["stream_type"] = stream_type
    if fmt == "SIMPLE":
        frame = {
            "ty": "trade",
            "cd": frame["code"],
            "sid": frame["sequential_id"],
            "st": stream_type,
        }
    trade, snapshot = decode_ws_frame(json.dumps(frame).encode())
    assert isinstance(trade, Trade)  # the record itself is the same either way
    assert snapshot == (stream_type == "SNAPSHOT")


@pytest.mark.parametrize(("change", "sign"), [("RISE", 1), ("EVEN", 1), ("FALL", -1)])
def test_ws_trade_change_price_sign_follows_change(change: str, sign: int) -> None:
    frame = json.loads(WS_TRADE_DEFAULT)
    frame["change"] = change
    frame["change_price"] = 1234.0
    trade = decode_ws(json.dumps(frame).encode())
    assert isinstance(trade, Trade)
    assert trade.change_price == sign * 1234.0


def test_rest_ticker_uses_signed_change() -> None:
    (ticker,) = decode_tickers(REST_TICKER)
    raw = json.loads(REST_TICKER)[0]
    assert ticker.change == "FALL"
    assert ticker.change_price == raw["signed_change_price"] < 0
    assert ticker.change_rate == raw["signed_change_rate"] < 0
    assert ticker.ms == raw["timestamp"]
    assert ticker.trade_ms == raw["trade_timestamp"]
    assert ticker.acc_value == raw["acc_trade_price"]
    assert ticker.acc_volume_24h == raw["acc_trade_volume_24h"]
    assert ticker.high_52w_date == raw["highest_52_week_date"]


def test_ws_ticker_default_and_simple_equal_rest_ticker() -> None:
    raw = json.loads(REST_TICKER)[0]
    ws = {k: v for k, v in raw.items() if not k.endswith("_kst")}
    ws["code"] = ws.pop("market")
    ws.update(
        type="ticker",
        stream_type="REALTIME",
        ask_bid="BID",
        acc_ask_volume=150.11940843,
        acc_bid_volume=154.0,
        market_state="ACTIVE",
        is_trading_suspended=False,
        delisting_date=None,
        market_warning="NONE",
    )
    (rest,) = decode_tickers(REST_TICKER)
    default = decode_ws(json.dumps(ws).encode())
    assert isinstance(default, Ticker)
    assert msgspec.structs.replace(default, **WS_ONLY_TICKER) == rest
    # The WebSocket-only fields, which REST does not send (API.md §1.4).
    assert (default.side, default.acc_ask_volume, default.acc_bid_volume) == (
        "BID",
        150.11940843,
        154.0,
    )
    assert (default.market_state, default.delisting_date) == ("ACTIVE", None)
    assert msgspec.structs.replace(rest, **WS_ONLY_TICKER) == rest
    short = {
        "type": "ty", "code": "cd", "opening_price": "op", "high_price": "hp",
        "low_price": "lp", "trade_price": "tp", "prev_closing_price": "pcp", "change": "c",
        "change_price": "cp", "signed_change_price": "scp", "change_rate": "cr",
        "signed_change_rate": "scr", "trade_volume": "tv", "acc_trade_volume": "atv",
        "acc_trade_volume_24h": "atv24h", "acc_trade_price": "atp",
        "acc_trade_price_24h": "atp24h", "trade_date": "tdt", "trade_time": "ttm",
        "trade_timestamp": "ttms", "ask_bid": "ab", "highest_52_week_price": "h52wp",
        "highest_52_week_date": "h52wdt", "lowest_52_week_price": "l52wp",
        "lowest_52_week_date": "l52wdt", "market_state": "ms", "timestamp": "tms",
        "stream_type": "st", "acc_ask_volume": "aav", "acc_bid_volume": "abv",
        "is_trading_suspended": "its", "delisting_date": "dd", "market_warning": "mw",
    }  # fmt: skip
    simple = {short[k]: v for k, v in ws.items()}
    assert decode_ws(json.dumps(simple).encode()) == default


@pytest.mark.parametrize("fmt", ["DEFAULT", "SIMPLE"])
@pytest.mark.parametrize(
    ("sent", "kept"),
    [("2026-08-01", "2026-08-01"), (None, None), ({"year": 2026}, None), (20260801, None)],
)
def test_ws_ticker_delisting_date_is_kept_only_as_a_string(
    fmt: str, sent: object, kept: str | None
) -> None:
    """Upbit documents it as "a date or null" without a format: an unexpected shape is
    dropped rather than failing the whole frame."""
    if fmt == "DEFAULT":
        frame = {
            "type": "ticker",
            "code": "KRW-BTC",
            "market_state": "DELISTED",
            "delisting_date": sent,
        }
    else:
        frame = {"ty": "ticker", "cd": "KRW-BTC", "ms": "DELISTED", "dd": sent}
    ticker = decode_ws(json.dumps(frame).encode())
    assert isinstance(ticker, Ticker)
    assert (ticker.market_state, ticker.delisting_date) == ("DELISTED", kept)


def test_day_candle_start_is_the_utc_label_not_the_timestamp() -> None:
    (candle,) = decode_candles(DAY_CANDLE, parse_timeframe("1d"))
    assert candle == Candle(
        market="KRW-BTC",
        timeframe="1d",
        start_ms=parse_time("2026-07-08T00:00:00Z"),
        open=94950000.0,
        high=95444000.0,
        low=94100000.0,
        close=94237000.0,
        volume=134.10911099,
        value=12700757562.77739,
        last_trade_ms=1783477656719,
    )


def test_candles_keep_upbit_order_newest_first() -> None:
    rows = [
        {
            "market": "KRW-ETH",
            "candle_date_time_utc": f"2026-08-03T10:{minute:02d}:00",
            "candle_date_time_kst": f"2026-08-03T19:{minute:02d}:00",
            "opening_price": 1.0 + minute,
            "high_price": 2.0 + minute,
            "low_price": 0.5 + minute,
            "trade_price": 1.5 + minute,
            "timestamp": 1785754038697 + minute,
            "candle_acc_trade_price": 10.0,
            "candle_acc_trade_volume": 2.0,
            "unit": 5,
        }
        for minute in (45, 40, 30)  # 10:35 had no trade: no candle
    ]
    candles = decode_candles(json.dumps(rows).encode(), parse_timeframe("5m"))
    assert [c.start_ms for c in candles] == [
        parse_time(f"2026-08-03T10:{m}:00") for m in ("45", "40", "30")
    ]
    assert {c.timeframe for c in candles} == {"5m"}


def test_ws_candle_matches_rest_candle_and_maps_60m_to_1h() -> None:
    frame = {
        "type": "candle.60m",
        "code": "USDT-BTC",
        "candle_date_time_utc": "2024-03-13T11:00:00",
        "candle_date_time_kst": "2024-03-13T20:00:00",
        "opening_price": 72738.58583492,
        "high_price": 73578.657,
        "low_price": 72738.58583492,
        "trade_price": 73578.655,
        "candle_acc_trade_volume": 0.02284923,
        "candle_acc_trade_price": 1669.08358949,
        "timestamp": 1710328237828,
        "stream_type": "REALTIME",
    }
    rest = {k: v for k, v in frame.items() if k not in ("type", "stream_type")}
    rest["market"] = rest.pop("code")
    (expected,) = decode_candles(json.dumps([rest]).encode(), parse_timeframe("1h"))
    assert decode_ws(json.dumps(frame).encode()) == expected
    simple = {
        "ty": frame["type"], "cd": frame["code"], "cdttmu": frame["candle_date_time_utc"],
        "cdttmk": frame["candle_date_time_kst"], "op": frame["opening_price"],
        "hp": frame["high_price"], "lp": frame["low_price"], "tp": frame["trade_price"],
        "catv": frame["candle_acc_trade_volume"], "catp": frame["candle_acc_trade_price"],
        "tms": frame["timestamp"], "st": "REALTIME",
    }  # fmt: skip
    assert decode_ws(json.dumps(simple).encode()) == expected


def test_orderbook_default_simple_and_rest_agree() -> None:
    ws = decode_ws(ORDERBOOK_SNAPSHOT_DEFAULT)
    assert isinstance(ws, Orderbook)
    assert ws.units[0] == OrderbookUnit(116539000.0, 0.02054761, 116538000.0, 0.08120946)
    assert ws.ms == 1790134742106 and ws.level == 0.0
    raw = json.loads(ORDERBOOK_SNAPSHOT_DEFAULT)
    rest = {
        "market": raw["code"],
        "timestamp": raw["timestamp"],
        "total_ask_size": raw["total_ask_size"],
        "total_bid_size": raw["total_bid_size"],
        # REST key order differs from WS (bid first); the record does not care.
        "orderbook_units": [
            {k: u[k] for k in ("bid_price", "bid_size", "ask_price", "ask_size")}
            for u in raw["orderbook_units"]
        ],
        "level": 0,
    }
    assert decode_orderbooks(json.dumps([rest]).encode()) == [ws]
    simple = {
        "ty": "orderbook",
        "cd": raw["code"],
        "tms": raw["timestamp"],
        "tas": raw["total_ask_size"],
        "tbs": raw["total_bid_size"],
        "obu": [
            {"ap": u["ask_price"], "bp": u["bid_price"], "as": u["ask_size"], "bs": u["bid_size"]}
            for u in raw["orderbook_units"]
        ],
        "st": "SNAPSHOT",
        "lv": 0,
    }
    assert decode_ws(json.dumps(simple).encode()) == ws


def test_orderbook_without_level_reads_as_native_tick() -> None:
    body = (
        b'[{"market":"KRW-BTC","timestamp":1,"total_ask_size":0,"total_bid_size":0,'
        b'"orderbook_units":[{"bid_price":0,"bid_size":0,"ask_price":0.00000689,'
        b'"ask_size":8.70827286}]}]'
    )
    (book,) = decode_orderbooks(body)
    assert book.level == 0.0
    assert book.units == (OrderbookUnit(0.00000689, 8.70827286, 0.0, 0.0),)


def test_markets_from_market_event_and_from_legacy_market_warning() -> None:
    korea = b"""[{"market":"KRW-ZIL","korean_name":"\xec\xa7\x88\xeb\xa6\xac\xec\xb9\xb4",
      "english_name":"Zilliqa","market_event":{"warning":true,"caution":{
      "PRICE_FLUCTUATIONS":false,"TRADING_VOLUME_SOARING":false,
      "DEPOSIT_AMOUNT_SOARING":false,"GLOBAL_PRICE_DIFFERENCES":true,
      "CONCENTRATION_OF_SMALL_ACCOUNTS":false}}},
      {"market":"KRW-BTC","korean_name":"x","english_name":"Bitcoin"}]"""
    zil, btc = decode_markets(korea)
    assert zil.market == "KRW-ZIL" and zil.korean_name == "질리카"
    assert zil.warning is True
    assert zil.caution["GLOBAL_PRICE_DIFFERENCES"] is True
    assert sum(zil.caution.values()) == 1 and len(zil.caution) == 5
    assert btc == MarketInfo("KRW-BTC", "x", "Bitcoin", False, {})
    indonesia = b"""[{"market":"BTC-ZIL","english_name":"Zilliqa","market_warning":"CAUTION"},
      {"market":"BTC-SIGN","english_name":"Sign","market_warning":"NONE"}]"""
    assert decode_markets(indonesia) == [
        MarketInfo("BTC-ZIL", None, "Zilliqa", True, {}),
        MarketInfo("BTC-SIGN", None, "Sign", False, {}),
    ]


def test_instruments_turn_strings_into_numbers() -> None:
    body = (
        b'[{"market":"KRW-DOGE","quote_currency":"KRW","tick_size":"1",'
        b'"supported_levels":["0","1","10","100"]},'
        b'{"market":"BTC-ETH","quote_currency":"BTC","tick_size":"0.00000001"}]'
    )
    assert decode_instruments(body) == [
        Instrument("KRW-DOGE", "KRW", 1.0, (0.0, 1.0, 10.0, 100.0)),
        Instrument("BTC-ETH", "BTC", 1e-8, (0.0,)),
    ]


def test_ws_status_and_error_frames() -> None:
    assert decode_ws(b'{"status":"UP"}') == WsStatus("UP")
    frame = '{"error":{"name":"NO_TICKET","message":"티켓이 존재하지 않거나"}}'.encode()
    assert decode_ws(frame) == WsError("NO_TICKET", "티켓이 존재하지 않거나")


@pytest.mark.parametrize(
    "frame",
    [b"not json", b"[1,2]", b'{"type":"nope","code":"KRW-BTC"}', b'{"ty":"myOrder"}', b"{}"],
)
def test_ws_rejects_what_it_cannot_decode_as_an_upstream_fault(frame: bytes) -> None:
    with pytest.raises(UpstreamError):
        decode_ws(frame)


def test_rest_decoders_reject_wrong_shapes_as_an_upstream_fault() -> None:
    with pytest.raises(UpstreamError, match="candle"):
        decode_candles(b'{"error":{"name":404,"message":"Code not found"}}', parse_timeframe("1m"))
    with pytest.raises(UpstreamError, match="trade"):
        decode_trades(b'[{"market":"KRW-BTC"}]')
    with pytest.raises(UpstreamError, match="instrument"):
        decode_instruments(b'[{"market":"A","quote_currency":"KRW","tick_size":"x"}]')


def test_records_are_frozen_and_encode() -> None:
    (trade,) = decode_trades(REST_TRADE)
    with pytest.raises(AttributeError):
        trade.price = 1.0  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(trade), type=Trade) == trade
    assert isinstance(decode_tickers(REST_TICKER)[0], Ticker)
    ws = decode_ws(WS_TRADE_DEFAULT)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ws), type=Trade) == ws


def test_records_without_the_ws_only_fields_still_decode() -> None:
    """A record encoded before the WebSocket-only fields existed (a Redis feed entry of an
    older version) decodes with them None; an older decoder ignores them."""
    (trade,) = decode_trades(REST_TRADE)
    (ticker,) = decode_tickers(REST_TICKER)
    for record in (trade, ticker):
        old = {k: v for k, v in msgspec.structs.asdict(record).items() if v is not None}
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=type(record)) == record

    class OldTrade(msgspec.Struct):  # the fields a Trade had before
        market: str
        seq: int
        change_price: float

    ws = decode_ws(WS_TRADE_DEFAULT)
    assert isinstance(ws, Trade)
    old_trade = msgspec.msgpack.decode(msgspec.msgpack.encode(ws), type=OldTrade)
    assert (old_trade.seq, old_trade.change_price) == (ws.seq, ws.change_price)


def test_candle_times_with_an_offset_are_converted_to_utc() -> None:
    rows = json.loads(DAY_CANDLE)
    naive = decode_candles(DAY_CANDLE, parse_timeframe("1d"))
    rows[0]["candle_date_time_utc"] = "2026-07-08T09:00:00+09:00"
    assert decode_candles(json.dumps(rows).encode(), parse_timeframe("1d")) == naive
