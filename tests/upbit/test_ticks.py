from __future__ import annotations

import pytest

from marketspine import InvalidRequestError
from marketspine._upbit.ticks import round_to_tick, tick_size, warmed_tick_size


@pytest.mark.parametrize(
    ("quote", "price", "tick"),
    [
        ("KRW", 91_200_000, 1000),
        ("KRW", 1_500_000, 1000),
        ("KRW", 700_000, 500),
        ("KRW", 120_000, 100),
        ("KRW", 60_000, 50),
        ("KRW", 20_000, 10),
        ("KRW", 7_000, 5),
        ("KRW", 2_000, 1),
        ("KRW", 125, 1),
        ("KRW", 50, 0.1),
        ("KRW", 5, 0.01),
        ("KRW", 0.5, 0.001),
        ("USDT", 73_249.665, 0.01),
        ("USDT", 5.5, 0.001),
        ("BTC", 0.035, 0.00000001),
    ],
)
def test_tick_table(quote: str, price: float, tick: float) -> None:
    assert tick_size(quote, price) == tick


def test_rounding_gives_clean_grid_values() -> None:
    assert round_to_tick("KRW", 91_200_499) == 91_200_000
    assert round_to_tick("KRW", 91_200_001, "up") == 91_201_000
    assert round_to_tick("KRW", 5.123, "down") == 5.12
    assert round_to_tick("KRW", 0.3000001) == 0.3
    assert round_to_tick("BTC", 0.0123456789) == 0.01234568


def test_unknown_quote() -> None:
    with pytest.raises(InvalidRequestError, match="KRW, BTC, USDT, IDR"):
        tick_size("EUR", 1.0)


def test_a_warmed_tick_holds_in_its_band_and_the_table_answers_elsewhere() -> None:
    # KRW-BTC's instrument said 1000 while it traded at 91.2M: that band is 1000-ticked.
    assert warmed_tick_size("KRW", 1000, 95_000_000, at=91_200_000) == 1000
    assert warmed_tick_size("KRW", 1000, 5.0, at=91_200_000) == 0.01  # another band: the table
    # An exception the table does not know (USDT/KRW's 0.5) holds in the band it was seen in.
    assert warmed_tick_size("KRW", 0.5, 1_450, at=1_400) == 0.5
    assert warmed_tick_size("KRW", 0.5, 20_000, at=1_400) == 10
    # An outdated table: the instrument wins in the band of the price it was fetched at.
    assert warmed_tick_size("KRW", 0.1, 500, at=480) == 0.1  # the table says 1 there
    # No price known (a catalog loaded from disk): a tick the table knows is placed by the
    # table; an unknown one is the best we know at every price.
    assert warmed_tick_size("KRW", 1000, 5.0, at=None) == 0.01
    assert warmed_tick_size("KRW", 1000, 1_200_000, at=None) == 1000
    assert warmed_tick_size("KRW", 0.5, 20_000, at=None) == 0.5
    assert warmed_tick_size("EUR", 0.01, 5.0, at=None) == 0.01  # unknown quote: the instrument
