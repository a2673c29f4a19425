"""The argument checks every public method runs first (pure): accepted forms convert to one
value, anything else raises InvalidRequestError naming the argument, the value given and
what is accepted."""

from __future__ import annotations

import datetime as dt
import enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketspine._base.args import (
    EPOCH_MS_MAX,
    EPOCH_MS_MIN,
    STREAM_KINDS,
    count_arg,
    enum_arg,
    flag_arg,
    kinds_arg,
    market_arg,
    markets_arg,
    ms_arg,
    needs_arg,
    number_arg,
    quote_arg,
    time_arg,
    timeframe_arg,
)
from marketspine._base.time import to_ms
from marketspine._base.timeframes import TIMEFRAMES
from marketspine.errors import InvalidRequestError

# Upbit's lifetime and well beyond: every one of these must convert the same in every form.
moments = st.datetimes(min_value=dt.datetime(2017, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
)
zones = st.sampled_from(
    [dt.UTC, dt.timezone(dt.timedelta(hours=9)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))]
)


@given(moments)
def test_every_time_form_gives_the_same_epoch_ms(moment: dt.datetime) -> None:
    ms = to_ms(moment)
    assert time_arg(moment, "start") == ms  # naive means UTC
    assert time_arg(moment.replace(tzinfo=dt.UTC), "start") == ms
    assert time_arg(moment.isoformat(), "start") == ms
    assert time_arg(moment.isoformat() + "Z", "start") == ms
    assert time_arg(ms, "start") == ms


@given(moments, zones)
def test_aware_datetimes_in_any_zone_are_the_same_instant(
    moment: dt.datetime, zone: dt.timezone
) -> None:
    aware = moment.replace(tzinfo=dt.UTC).astimezone(zone)
    assert time_arg(aware, "end") == to_ms(moment)
    assert time_arg(aware.isoformat(), "end") == to_ms(moment)


@given(st.dates(min_value=dt.date(2017, 1, 1), max_value=dt.date(2100, 1, 1)))
def test_a_date_is_its_midnight_utc(day: dt.date) -> None:
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    assert time_arg(day, "start") == to_ms(midnight)
    assert time_arg(day.isoformat(), "start") == to_ms(midnight)


@given(st.integers(min_value=-(10**12), max_value=EPOCH_MS_MIN - 1))
def test_an_int_that_can_only_be_epoch_seconds_is_refused(seconds: int) -> None:
    with pytest.raises(InvalidRequestError, match="start") as caught:
        time_arg(seconds, "start")
    assert repr(seconds) in str(caught.value)


def test_the_seconds_error_says_what_to_pass_instead() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        time_arg(1_700_000_000, "end")
    text = str(caught.value)
    assert "invalid end 1700000000 (int)" in text
    assert "epoch seconds" in text and "1700000000000" in text
    assert "datetime" in text and "ISO 8601" in text


def test_the_threshold_is_exact() -> None:
    assert time_arg(EPOCH_MS_MIN, "start") == EPOCH_MS_MIN
    assert time_arg(EPOCH_MS_MAX, "start") == EPOCH_MS_MAX
    with pytest.raises(InvalidRequestError, match="year 9999"):
        time_arg(EPOCH_MS_MAX + 1, "start")


bad_times = st.one_of(
    st.booleans(),
    st.floats(allow_nan=True),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.times(),
    st.timedeltas(),
    st.text(max_size=12).filter(lambda t: not _iso(t)),
)


def _iso(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return False
    return True


@given(bad_times)
def test_anything_else_is_refused_naming_argument_value_and_forms(value: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        time_arg(value, "start")
    text = str(caught.value)
    assert text.startswith("invalid start ")
    assert f"({type(value).__name__})" in text
    assert "ISO 8601" in text and "epoch milliseconds" in text


def test_none_stays_none() -> None:
    assert time_arg(None, "start") is None


@pytest.mark.parametrize(
    ("given_", "shown"),
    [(123, "123 (int)"), (None, "None (NoneType)"), (b"KRW-BTC", "(bytes)"), ("KRWBTC", "(str)")],
)
def test_market_must_be_a_code_string(given_: object, shown: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        market_arg(given_)
    assert "invalid market" in str(caught.value)
    assert shown in str(caught.value)
    assert "KRW-BTC" in str(caught.value)


@given(st.sampled_from(["KRW", "BTC", "USDT"]), st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True))
def test_market_codes_are_upper_cased(quote: str, base: str) -> None:
    assert market_arg(f" {quote.lower()}-{base} ") == f"{quote}-{base.upper()}"


def test_a_plain_string_is_one_market_not_its_characters() -> None:
    assert markets_arg("KRW-BTC") == ["KRW-BTC"]
    assert markets_arg(("krw-btc", "KRW-ETH", "KRW-BTC")) == ["KRW-BTC", "KRW-ETH"]
    for bad in ([], 5, {"KRW-BTC": 1}, [None]):
        with pytest.raises(InvalidRequestError, match="markets"):
            markets_arg(bad)


def test_timeframes_by_name_or_object_only() -> None:
    assert timeframe_arg("60m") is TIMEFRAMES["1h"]
    assert timeframe_arg(TIMEFRAMES["1M"]) is TIMEFRAMES["1M"]
    for bad in (1, None, 1.5, b"1m"):
        with pytest.raises(InvalidRequestError, match=r"invalid timeframe .*1s 1m"):
            timeframe_arg(bad)
    with pytest.raises(InvalidRequestError, match="unknown timeframe '2m'"):
        timeframe_arg("2m")


@pytest.mark.parametrize(
    ("value", "shown"),
    [("5", "'5' (str)"), (5.0, "5.0 (float)"), (True, "True (bool)"), (None, "None (NoneType)")],
)
def test_count_is_an_int_only(value: object, shown: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        count_arg(value, "count", 1, 200)
    assert str(caught.value) == f"invalid count {shown}: expected an integer 1..200"


@given(st.integers())
def test_count_range_error_shows_the_real_value(value: int) -> None:
    if 1 <= value <= 200:
        assert count_arg(value, "count", 1, 200) == value
    else:
        with pytest.raises(InvalidRequestError, match=f"invalid count {value}: .*1..200"):
            count_arg(value, "count", 1, 200)


def test_flags_numbers_and_enums() -> None:
    assert flag_arg(True, "fill") is True
    with pytest.raises(InvalidRequestError, match="invalid fill 1 \\(int\\): expected True"):
        flag_arg(1, "fill")
    assert number_arg(2, "price") == 2.0
    for bad in (float("nan"), float("inf"), -1, "2", True):
        with pytest.raises(InvalidRequestError, match="price"):
            number_arg(bad, "price")

    class Colour(enum.Enum):
        RED = "r"

    assert enum_arg("red", Colour, "colour") is Colour.RED
    with pytest.raises(InvalidRequestError, match=r"Colour\.RED"):
        enum_arg("r", Colour, "colour")


def test_every_candle_timeframe_is_a_stream_kind() -> None:
    assert {f"candle.{name}" for name in TIMEFRAMES} <= set(STREAM_KINDS)
    assert kinds_arg("candle.1m") == ["candle.1m"]
    assert kinds_arg(["candle.60m", "candle.240m", "trade"]) == ["candle.1h", "candle.4h", "trade"]
    with pytest.raises(InvalidRequestError) as caught:
        kinds_arg(["candle.2m"])
    for kind in STREAM_KINDS:
        assert kind in str(caught.value)
    for bad in ([], 3, [3], {"trade": 1}):
        with pytest.raises(InvalidRequestError, match="kind"):
            kinds_arg(bad)


def test_needs_are_checked_and_normalised() -> None:
    assert needs_arg({"krw-btc": {"60m": 5, "1h": 9}}, 100) == {"KRW-BTC": {TIMEFRAMES["1h"]: 9}}
    bad: object
    for bad in ([], {"KRW-BTC": 5}, {"KRW-BTC": {"1m": "5"}}, {5: {"1m": 5}}):
        with pytest.raises(InvalidRequestError):
            needs_arg(bad, 100)


def test_the_clients_to_ms_takes_any_int_as_milliseconds() -> None:
    assert ms_arg(94_694_400_000, "to_ms") == 94_694_400_000  # 1973, a yearly page
    assert ms_arg("2024-01-01", "to_ms") == to_ms(dt.datetime(2024, 1, 1))
    with pytest.raises(InvalidRequestError, match="to_ms"):
        ms_arg(True, "to_ms")


def test_quotes_one_or_several() -> None:
    assert quote_arg(" krw ") == "KRW"
    assert quote_arg("KRW,BTC") == "KRW,BTC"
    for bad in ("", "KRW,", 5, None, "K R W"):
        with pytest.raises(InvalidRequestError, match="quote"):
            quote_arg(bad)
