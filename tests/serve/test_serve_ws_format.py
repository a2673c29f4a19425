"""``serve``'s WebSocket rendering of the fields only Upbit's WebSocket sends: a record's own
value when it has one (it came over the WebSocket), else what the gateway knows (``Extras``),
else null; and which records repeat the pair's last one (``repeats``)."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from marketspine._serve.ws_format import Extras, render, repeats
from marketspine._spine.answers import with_meta
from marketspine._spine.result import ResultMeta
from marketspine.records import Ticker, Trade

REST_TRADE = Trade("KRW-BTC", 1785395043779, 91361000.0, 0.01275549, "ASK", 17853950437790001,
                   91424000.0, -63000.0)  # fmt: skip
WS_TRADE = msgspec.structs.replace(
    REST_TRADE,
    best_ask_price=91370000.0,
    best_ask_size=0.0070459,
    best_bid_price=91361000.0,
    best_bid_size=0.00196362,
)
REST_TICKER = Ticker("KRW-BTC", 1785397260700, 1785397260652, 91200000.0, 91374000.0,
                     92119000.0, 90888000.0, 91424000.0, "FALL", -224000.0, -0.0024501225,
                     0.00016456, 304.11940843, 27800806282.39862, 814.34496604,
                     74674126733.71954, 179869000.0, "2025-10-09", 88770000.0,
                     "2026-07-01")  # fmt: skip
WS_TICKER = msgspec.structs.replace(
    REST_TICKER,
    side="ASK",
    acc_ask_volume=150.11940843,
    acc_bid_volume=154.0,
    market_state="ACTIVE",
)
KNOWN = Extras(last_side="BID", best_ask=(1.0, 2.0), best_bid=(0.5, 3.0))
NOTHING = Extras()


def rendered(record: Any, *, simple: bool = False, extras: Extras = NOTHING) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        render(record, simple=simple, stream_type="REALTIME", extras=extras)
    )
    return out


def test_a_websocket_trade_renders_its_own_best_quotes() -> None:
    for extras in (NOTHING, KNOWN):  # the last book seen does not override them
        frame = rendered(WS_TRADE, extras=extras)
        assert (frame["best_ask_price"], frame["best_ask_size"]) == (91370000, 0.0070459)
        assert (frame["best_bid_price"], frame["best_bid_size"]) == (91361000, 0.00196362)
    short = rendered(WS_TRADE, simple=True, extras=KNOWN)
    assert (short["bap"], short["bas"], short["bbp"], short["bbs"]) == (
        91370000,
        0.0070459,
        91361000,
        0.00196362,
    )


def test_a_rest_trade_renders_the_last_book_seen_or_null() -> None:
    frame = rendered(REST_TRADE, extras=KNOWN)
    assert [frame[k] for k in ("best_ask_price", "best_ask_size")] == [1.0, 2.0]
    assert [frame[k] for k in ("best_bid_price", "best_bid_size")] == [0.5, 3.0]
    frame = rendered(REST_TRADE)
    assert {k: v for k, v in frame.items() if k.startswith("best_")} == dict.fromkeys(
        ("best_ask_price", "best_ask_size", "best_bid_price", "best_bid_size")
    )


def test_a_websocket_ticker_renders_its_own_fields() -> None:
    delisted = msgspec.structs.replace(
        WS_TICKER, market_state="DELISTED", delisting_date="2026-07-31"
    )
    frame = rendered(delisted, extras=KNOWN)
    assert frame["ask_bid"] == "ASK"  # not the side of the last trade the gateway saw
    assert (frame["acc_ask_volume"], frame["acc_bid_volume"]) == (150.11940843, 154.0)
    assert (frame["market_state"], frame["delisting_date"]) == ("DELISTED", "2026-07-31")
    assert frame["is_trading_suspended"] is False
    short = rendered(delisted, simple=True, extras=KNOWN)
    assert (short["ab"], short["aav"], short["abv"], short["ms"], short["dd"]) == (
        "ASK",
        150.11940843,
        154.0,
        "DELISTED",
        "2026-07-31",
    )


def test_a_rest_ticker_renders_what_the_gateway_knows() -> None:
    frame = rendered(REST_TICKER, extras=KNOWN)
    assert frame["ask_bid"] == "BID"  # the side of the last trade seen
    assert frame["acc_ask_volume"] is None and frame["acc_bid_volume"] is None
    assert (frame["market_state"], frame["delisting_date"]) == ("ACTIVE", None)
    assert rendered(REST_TICKER)["ask_bid"] is None


def test_the_same_trade_repeats_whatever_its_source() -> None:
    assert repeats(WS_TRADE, REST_TRADE) is WS_TRADE  # the copy with best_* is kept
    assert repeats(REST_TRADE, WS_TRADE) is WS_TRADE
    assert repeats(WS_TRADE, WS_TRADE) is WS_TRADE
    other = msgspec.structs.replace(WS_TRADE, seq=WS_TRADE.seq + 1)
    assert repeats(other, WS_TRADE) is None
    assert repeats(msgspec.structs.replace(WS_TRADE, market="KRW-ETH"), WS_TRADE) is None


def test_a_websocket_copy_of_a_rest_ticker_repeats_it() -> None:
    assert repeats(WS_TICKER, REST_TICKER) is WS_TICKER
    # What Spine.ticker answers (the gateway's snapshot fetch) carries meta too.
    assert repeats(WS_TICKER, with_meta(REST_TICKER, ResultMeta())) is WS_TICKER
    assert repeats(REST_TICKER, REST_TICKER) is REST_TICKER
    moved = msgspec.structs.replace(WS_TICKER, price=91201000.0)
    assert repeats(moved, REST_TICKER) is None


def test_a_delisted_ticker_is_news_even_when_nothing_else_changed() -> None:
    delisted = msgspec.structs.replace(WS_TICKER, market_state="DELISTED")
    assert repeats(delisted, WS_TICKER) is None
    assert repeats(WS_TICKER, WS_TICKER) is WS_TICKER
