"""The simulator's WebSocket messages as plain data: request parsing, Upbit's error names,
depth suffixes, levels, key sets per format, exact sequential ids."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from marketspine._upbit.levels import aggregate_levels, supported_levels
from marketspine._upbit.ws_format import (
    KEYS,
    ListRequest,
    StreamRequest,
    SubscribeRequest,
    WsRequestError,
    encode,
    error_message,
    list_message,
    orderbook_message,
    parse_request,
    split_code,
    trade_message,
)
from marketspine.sim._limits import ConnectLimiter, MessageLimiter


@dataclass(frozen=True)
class _Trade:
    ms: int
    price: float
    volume: float
    side: str
    seq: int


def test_subscribe_request_with_format_anywhere_and_both_flag_spellings() -> None:
    request = parse_request(
        b'[{"ticket":"t1"},{"format":"SIMPLE"},'
        b'{"type":"ticker","codes":["KRW-BTC","KRW-ETH"],"isOnlySnapshot":true},'
        b'{"type":"orderbook","codes":["KRW-BTC.5"],"level":"10000","is_only_realtime":true}]'
    )
    assert request == SubscribeRequest(
        "t1",
        (
            StreamRequest("ticker", ("KRW-BTC", "KRW-ETH"), only_snapshot=True),
            StreamRequest("orderbook", ("KRW-BTC.5",), only_realtime=True, level=10000.0),
        ),
        "SIMPLE",
    )


def test_list_subscriptions_request() -> None:
    assert parse_request('[{"ticket":"x"},{"method":"LIST_SUBSCRIPTIONS"}]') == ListRequest(
        "x", None
    )
    assert parse_request(
        '[{"method":"LIST_SUBSCRIPTIONS"},{"ticket":"x"},{"format":"SIMPLE_LIST"}]'
    ) == ListRequest("x", "SIMPLE_LIST")


@pytest.mark.parametrize(
    ("raw", "name", "message"),
    [
        ("hello", "WRONG_FORMAT", "Format 이 맞지 않습니다."),
        ('{"ticket":"x"}', "WRONG_FORMAT", "Format 이 맞지 않습니다."),
        ("[1, 2]", "WRONG_FORMAT", "Format 이 맞지 않습니다."),
        ('[{"type":"ticker","codes":["KRW-BTC"]}]', "NO_TICKET", None),
        ('[{"ticket":""},{"type":"ticker","codes":["KRW-BTC"]}]', "NO_TICKET", None),
        ('[{"ticket":"x"}]', "NO_TYPE", "type 필드가 존재하지 않습니다."),
        ('[{"ticket":"x"},{"codes":["KRW-BTC"]}]', "NO_TYPE", None),
        ('[{"ticket":"x"},{"type":"ticker"}]', "NO_CODES", "codes 필드가 존재하지 않습니다."),
        (
            '[{"ticket":"x"},{"type":"ticker","codes":[]}]',
            "INVALID_PARAM",
            "codes 필드가 비어 있습니다.",
        ),
        (
            '[{"ticket":"x"},{"type":"nope","codes":["KRW-BTC"]}]',
            "INVALID_PARAM",
            "nope 은 지원하지 않는 타입입니다.",
        ),
        (
            '[{"ticket":"x"},{"type":"ticker","codes":["KRW-BTC"]},{"format":"XML"}]',
            "INVALID_PARAM",
            None,
        ),
    ],
)
def test_upbit_error_names(raw: str, name: str, message: str | None) -> None:
    with pytest.raises(WsRequestError) as caught:
        parse_request(raw)
    assert caught.value.name == name
    if message is not None:
        assert str(caught.value) == message
    body = json.loads(error_message(caught.value))
    assert body == {"error": {"name": name, "message": str(caught.value)}}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("KRW-BTC", ("KRW-BTC", 30)),
        ("KRW-BTC.1", ("KRW-BTC", 1)),
        ("KRW-BTC.5", ("KRW-BTC", 5)),
        ("KRW-BTC.15", ("KRW-BTC", 15)),
        ("KRW-ETH.20", ("KRW-ETH", 30)),
        ("USDT-ETH.2", ("USDT-ETH", 30)),
        ("KRW-ETH.x", ("KRW-ETH", 30)),
    ],
)
def test_depth_suffix(code: str, expected: tuple[str, int]) -> None:
    assert split_code(code) == expected


def test_levels_are_krw_only_and_aggregate_toward_worse_prices() -> None:
    assert supported_levels("BTC", 0.00000001) == (0.0,)
    assert supported_levels("KRW", 1000.0, "sg") == (0.0,)
    assert supported_levels("KRW", 0.1) == (0.0, 1.0, 10.0, 100.0)
    asks, bids = aggregate_levels(
        [(101_000.0, 1.0), (102_000.0, 2.0), (111_000.0, 0.5)],
        [(99_000.0, 1.0), (98_000.0, 0.25), (89_000.0, 3.0)],
        10_000.0,
    )
    assert asks == [(110_000, 3.0), (120_000, 0.5)]
    assert bids == [(90_000, 1.25), (80_000, 3.0)]


def test_orderbook_message_pads_thin_side_and_totals_what_it_shows() -> None:
    message = orderbook_message(
        False,
        "KRW-BTC",
        ms=5,
        asks=[(10.0, 1.0), (11.0, 2.0), (12.0, 4.0)],
        bids=[(9.0, 0.5)],
        depth=2,
        level=0.0,
        stream_type="SNAPSHOT",
    )
    assert message["orderbook_units"] == [
        {"ask_price": 10.0, "bid_price": 9.0, "ask_size": 1.0, "bid_size": 0.5},
        {"ask_price": 11.0, "bid_price": 0, "ask_size": 2.0, "bid_size": 0},
    ]
    assert (message["total_ask_size"], message["total_bid_size"]) == (3.0, 0.5)
    assert message["level"] == 0 and isinstance(message["level"], int)


def test_trade_sequential_id_is_an_exact_json_integer_and_change_unsigned() -> None:
    seq = 17853950437790001  # beyond 2**53: a float would turn it into ...790000
    trade = _Trade(1785395043779, 91361000.0, 0.01275549, "ASK", seq)
    message = trade_message(
        False,
        "KRW-BTC",
        trade,
        prev_close=91424000.0,
        best_ask=(91370000.0, 0.0070459),
        best_bid=(91361000.0, 0.00196362),
        sent_ms=1785395043831,
        stream_type="REALTIME",
    )
    (frame,) = encode([message], "DEFAULT")
    assert b'"sequential_id":17853950437790001' in frame
    decoded = json.loads(frame)
    assert decoded["sequential_id"] == seq
    assert (decoded["change"], decoded["change_price"]) == ("FALL", 63000.0)
    assert (decoded["trade_date"], decoded["trade_time"]) == ("2026-07-30", "07:04:03")


def test_simple_keys_and_list_formats() -> None:
    rows = [("ticker", ["KRW-BTC"], None), ("orderbook", ["KRW-BTC.5"], 0)]
    simple = list_message(True, "t", rows)
    assert simple == {
        "mthd": "LIST_SUBSCRIPTIONS",
        "rslt": [
            {"ty": "ticker", "cds": ["KRW-BTC"]},
            {"ty": "orderbook", "cds": ["KRW-BTC.5"], "lv": 0},
        ],
        "tckt": "t",
    }
    default = list_message(False, "t", rows)
    assert json.loads(encode([default, default], "JSON_LIST")[0]) == [default, default]
    assert [json.loads(f) for f in encode([default, default], "DEFAULT")] == [default, default]
    assert encode([], "SIMPLE_LIST") == []
    # every SIMPLE key table is a one-to-one renaming of the DEFAULT one
    for name, tables in KEYS.items():
        assert len(set(tables[True])) == len(tables[False]), name


def test_connect_limiter_allows_five_per_second_per_ip() -> None:
    now = [100.0]
    limiter = ConnectLimiter(clock=lambda: now[0])
    assert [limiter.admit("1.1.1.1") for _ in range(6)] == [4, 3, 2, 1, 0, None]
    assert limiter.admit("2.2.2.2") == 4
    now[0] += 0.5
    assert limiter.admit("1.1.1.1") is None
    now[0] += 0.5
    assert limiter.admit("1.1.1.1") == 4


def test_message_limiter_five_per_second_and_hundred_per_minute() -> None:
    limiter = MessageLimiter()
    assert [limiter.allow(0.0) for _ in range(6)] == [True] * 5 + [False]
    limiter = MessageLimiter()
    granted = sum(limiter.allow(t * 0.25) for t in range(240))  # 4/s for a minute
    assert granted == 100
    assert limiter.allow(60.1)  # the oldest ones left the minute window
