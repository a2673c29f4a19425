from __future__ import annotations

import pytest

from marketspine import InvalidRequestError
from marketspine._ticks import round_to_tick, tick_size


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
