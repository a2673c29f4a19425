"""Orderbook aggregation levels ("모아보기"): which levels a market supports and how a
book is grouped into them. Shared by REST ``/v1/orderbook`` and the WebSocket feed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["aggregate_levels", "clean_float", "is_supported_level", "supported_levels", "whole"]


def supported_levels(quote: str, tick: float, region: str = "kr") -> tuple[float, ...]:
    """Orderbook aggregation levels ("모아보기") of a market whose native tick is ``tick``:
    0 (the native tick) everywhere, plus 10, 100 and 1000 ticks on Korea's KRW markets
    (the same rule as REST ``/v1/orderbook/instruments``)."""
    if quote != "KRW" or region != "kr":
        return (0.0,)
    return (0.0, *(clean_float(tick * 10**k) for k in (1, 2, 3)))


def is_supported_level(level: float, levels: Sequence[float]) -> bool:
    """Whether ``level`` is one of ``levels`` (compared with float tolerance)."""
    return any(math.isclose(level, x, abs_tol=1e-12) for x in levels)


def clean_float(value: float) -> float:
    # Products like 0.1 * 10 come out as 1.0000000000000002; snap them back.
    return float(f"{value:.10g}")


def aggregate_levels(
    asks: Sequence[tuple[float, float]], bids: Sequence[tuple[float, float]], level: float
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Group a book into ``level``-wide price buckets: asks round up, bids round down (so a
    bucket never shows a better price than any order in it); sizes are summed."""
    return _buckets(asks, level, math.ceil), _buckets(bids, level, math.floor)


def _buckets(
    side: Sequence[tuple[float, float]], level: float, to_grid: Any
) -> list[tuple[float, float]]:
    merged: dict[float, float] = {}
    for price, size in side:
        bucket = clean_float(to_grid(round(price / level, 9)) * level)
        merged[bucket] = merged.get(bucket, 0.0) + size
    return [(whole(price), round(size, 8)) for price, size in merged.items()]


def whole(value: float) -> float:
    # A whole number goes out as a JSON integer (116539000, not 116539000.0), as on Upbit.
    return int(value) if float(value).is_integer() else value
