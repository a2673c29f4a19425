"""The one market-code normalizer: what it accepts, what it refuses and how it says so."""

from __future__ import annotations

import pytest

from marketspine._base.markets import is_market_code, market_code, normalize_market
from marketspine.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("KRW-BTC", "KRW-BTC"),
        ("krw-btc", "KRW-BTC"),
        ("  Usdt-Eth\t", "USDT-ETH"),
        ("BTC-1INCH", "BTC-1INCH"),
    ],
)
def test_codes_are_stripped_and_upper_cased(given: str, code: str) -> None:
    assert normalize_market(given) == code
    assert market_code(given) == code


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("KRWBTC", "'KRWBTC' (str)"),
        ("KRW-BTC,KRW-ETH", "'KRW-BTC,KRW-ETH' (str)"),
        ("KRW-BTC.5", "'KRW-BTC.5' (str)"),
        ("KRW_BTC", "'KRW_BTC' (str)"),
        ("KRW--BTC", "'KRW--BTC' (str)"),
        ("KRW-BT C", "'KRW-BT C' (str)"),
        ("", "'' (str)"),
        (123, "123 (int)"),
        (None, "None (NoneType)"),
        (b"KRW-BTC", "b'KRW-BTC' (bytes)"),
    ],
)
def test_anything_else_is_refused_saying_what_was_given_and_what_is_accepted(
    given: object, shown: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        market_code(given, "market in needs")
    message = str(caught.value)
    assert message.startswith(f"invalid market in needs {shown}: expected a market code")
    assert "expected QUOTE-BASE" in message and "any case" in message


def test_a_long_value_is_cut_short_in_the_message() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        normalize_market("X" * 500)
    assert len(str(caught.value)) < 250 and "..." in str(caught.value)


def test_a_code_normalized_once_is_passed_through_as_the_same_object() -> None:
    code = normalize_market(" krw-xrp ")
    assert market_code(code) is code
    # An equal string from elsewhere is normalized (to the same object), not trusted.
    assert market_code("".join(["KRW-", "XRP"])) is code


def test_the_exact_shape_check_refuses_what_would_need_normalizing() -> None:
    assert is_market_code("KRW-BTC")
    assert not is_market_code("krw-btc")
    assert not is_market_code(" KRW-BTC")
    assert not is_market_code("KRW-BTC,KRW-ETH")
