"""Upbit's parameters read as Upbit (a Java service) reads them: serve refuses with these
before anything goes upstream, the simulator answers with them."""

from __future__ import annotations

import pytest

from marketspine._upbit.params import (
    MAX_CODE_LENGTH,
    MAX_SEQUENTIAL_ID,
    check_code_length,
    count_value,
    cursor_value,
    days_ago_value,
    int_value,
    quote_values,
    time_of_day_ms,
)
from marketspine._upbit.texts import NOT_FOUND, TYPE_MISMATCH, WRONG_VALUE
from marketspine.errors import InvalidRequestError, UnknownMarketError


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("7", 7), ("-3", -3), ("+5", 5)])
def test_an_int_is_ascii_digits_in_javas_range(text: str, value: int) -> None:
    assert int_value(text) == value


@pytest.mark.parametrize(
    "text", ["", " 5", "5 ", "1_000", "１", "1.5", "1e3", "0x10", "abc", "2147483648", "9" * 40]
)
def test_anything_else_is_a_type_mismatch(text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        int_value(text)
    assert str(caught.value) == TYPE_MISMATCH


def test_count_defaults_to_one_clamps_and_refuses_below_one() -> None:
    assert count_value(None, 200) == 1
    assert count_value("2147483647", 200) == 200
    with pytest.raises(InvalidRequestError, match="Invalid parameter"):
        count_value("0", 200)
    with pytest.raises(InvalidRequestError, match="Type mismatch"):
        count_value("99999999999", 200)


def test_a_cursor_is_a_sequential_id_or_refused() -> None:
    assert cursor_value("17853972606600000") == 17853972606600000
    assert cursor_value(str(MAX_SEQUENTIAL_ID)) == MAX_SEQUENTIAL_ID
    for absurd in ["99999999999999999999999999", str(MAX_SEQUENTIAL_ID + 1), "-1", "1.5", "x",
                   "", " 1", "１"]:  # fmt: skip
        with pytest.raises(InvalidRequestError) as caught:
            cursor_value(absurd)
        assert str(caught.value) == WRONG_VALUE


def test_days_ago_is_one_to_seven() -> None:
    assert [days_ago_value(str(d)) for d in range(1, 8)] == list(range(1, 8))
    for text, message in [("0", WRONG_VALUE), ("8", WRONG_VALUE), ("x", TYPE_MISMATCH)]:
        with pytest.raises(InvalidRequestError) as caught:
            days_ago_value(text)
        assert str(caught.value) == message


def test_time_of_day_in_both_spellings() -> None:
    assert time_of_day_ms("130000") == time_of_day_ms("13:00:00") == 13 * 3_600_000
    assert time_of_day_ms("235959") == 86_399_000
    for bad in ["240000", "126000", "12:3456", "1234:56", "12:34:5", "", "１２００００"]:
        with pytest.raises(InvalidRequestError, match="Invalid parameter"):
            time_of_day_ms(bad)


def test_codes_too_long_for_any_market_and_odd_quotes_are_unknown() -> None:
    check_code_length("KRW-" + "A" * (MAX_CODE_LENGTH - 4))
    with pytest.raises(UnknownMarketError, match=NOT_FOUND):
        check_code_length("KRW-" + "A" * MAX_CODE_LENGTH)
    assert quote_values(" krw,BTC,krw ,") == ["KRW", "BTC"]
    for bad in ["K-RW", ",".join(f"Q{i}" for i in range(11)), "X" * 11]:
        with pytest.raises(UnknownMarketError, match=NOT_FOUND):
            quote_values(bad)
