"""A quote currency's tick table over integer price units (pure, vectorised with numpy).

Prices in the generator are int64 counts of 1e-8 of the quote currency (``UNIT`` per 1),
the smallest tick of every table, so every tick is a whole number of units.
"""

from __future__ import annotations

import bisect
from typing import Literal

import numpy as np

from .._upbit.ticks import tick_table
from ._noise import F64, I64

__all__ = ["UNIT", "TickGrid"]

UNIT = 100_000_000  # price units per 1 quote currency


class TickGrid:
    """One quote currency's tick table over integer price units (see ``_upbit.ticks``)."""

    def __init__(self, quote: str) -> None:
        table = sorted(tick_table(quote))
        self.bounds = np.array([round(bound * UNIT) for bound, _ in table], np.int64)
        self.ticks = np.array([round(tick * UNIT) for _, tick in table], np.int64)
        self._bounds: list[int] = self.bounds.tolist()
        self._ticks: list[int] = self.ticks.tolist()

    def tick_at(self, units: int) -> int:
        """The tick (in units) at one price, without numpy (for per-level loops)."""
        band = bisect.bisect_right(self._bounds, units) - 1
        return self._ticks[max(band, 0)]

    def tick(self, units: I64) -> I64:
        """The tick (in units) of the band each price lies in."""
        band = np.searchsorted(self.bounds, units, side="right") - 1
        result: I64 = self.ticks[np.maximum(band, 0)]
        return result

    def snap(self, units: F64, mode: Literal["nearest", "down", "up"] = "nearest") -> I64:
        """Prices moved onto the tick grid (never below the smallest tick)."""
        price = np.maximum(units, 1.0)
        tick = self.tick(price.astype(np.int64))
        steps = price / tick
        if mode == "down":
            steps = np.floor(steps + 1e-9)
        elif mode == "up":
            steps = np.ceil(steps - 1e-9)
        else:
            steps = np.rint(steps)
        result: I64 = np.maximum(steps.astype(np.int64) * tick, 1)
        return result
