"""A 404 explained from the market list: which codes asked are not listed, and the listed
code each likely meant (pure)."""

from __future__ import annotations

from marketspine._upbit.unknown import unknown_markets_text, unknown_quote_text

LISTED = {"KRW-BTC", "KRW-ETH", "BTC-ETH", "USDT-BTC"}


def test_the_unlisted_codes_are_named_with_the_code_meant() -> None:
    assert unknown_markets_text(["BTC-KRW"], LISTED) == (
        "unknown market 'BTC-KRW'; did you mean KRW-BTC? (codes are QUOTE-BASE)"
    )
    assert unknown_markets_text(["KRW-BTC", "BTC-KRW"], LISTED) == (
        "unknown market 'BTC-KRW' (1 of the 2 asked); did you mean KRW-BTC? (codes are QUOTE-BASE)"
    )
    assert unknown_markets_text(["KRW-NOPE", "ETH-KRW", "KRW-BTC"], LISTED) == (
        "unknown markets 'KRW-NOPE', 'ETH-KRW' (2 of the 3 asked); did you mean KRW-ETH for "
        "ETH-KRW? (codes are QUOTE-BASE)"
    )
    assert unknown_markets_text(["KRW-NOPE"], LISTED) == "unknown market 'KRW-NOPE'"
    # ETH-BTC's swap, BTC-ETH, is listed: a hint, though ETH-BTC is a code of its own form.
    assert unknown_markets_text(["ETH-BTC"], LISTED) is not None
    assert unknown_markets_text(["KRW-BTC"], LISTED) is None  # the list knows no better


def test_an_unknown_quote_currency_is_named_with_those_listed() -> None:
    assert unknown_quote_text("USD", LISTED) == (
        "unknown quote currency 'USD': listed markets are quoted in BTC, KRW, USDT"
    )
    assert unknown_quote_text("KRW,USD,EUR", LISTED) == (
        "unknown quote currency 'USD', 'EUR': listed markets are quoted in BTC, KRW, USDT"
    )
    assert unknown_quote_text("KRW,BTC", LISTED) is None
