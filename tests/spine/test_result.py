"""Candle results convert to pandas/polars and fill empty windows only on request."""

from __future__ import annotations

import datetime as dt

from helpers import require_module

from marketspine import parse_timeframe
from marketspine._base.time import MINUTE_MS, parse_time
from marketspine._spine.result import CandleResult, ResultMeta, fill_gaps
from marketspine.records import Candle

T0 = parse_time("2024-12-31T23:58:00")


def candle(minute: int, close: float, volume: float = 1.0) -> Candle:
    start = T0 + minute * MINUTE_MS
    return Candle(
        "KRW-ABC",
        "1m",
        start,
        close - 1,
        close + 1,
        close - 2,
        close,
        volume,
        volume * close,
        start + 30_000,
    )


def test_result_is_a_sequence_with_meta_and_frames() -> None:
    rows = [candle(0, 100.0), candle(3, 103.0)]
    result = CandleResult(
        "KRW-ABC",
        parse_timeframe("1m"),
        rows,
        ResultMeta(sources=("database", "upstream"), upstream_calls=1),
    )
    assert list(result) == rows and len(result) == 2 and result[1] is rows[1]
    assert result.meta.source == "mixed"
    require_module(
        "pandas", "pandas is not installed (the pandas extra: pip install -e '.[pandas]')"
    )
    require_module(
        "polars", "polars is not installed (the polars extra: pip install -e '.[polars]')"
    )
    frame = result.to_pandas()
    assert list(frame.columns) == ["open", "high", "low", "close", "volume", "value"]
    assert frame.index[1].to_pydatetime() == dt.datetime(2025, 1, 1, 0, 1, tzinfo=dt.UTC)
    assert frame["close"].tolist() == [100.0, 103.0]
    polars_frame = result.to_polars()
    assert polars_frame["close"].to_list() == [100.0, 103.0]
    assert str(polars_frame.schema["time_utc"]) == "Datetime(time_unit='us', time_zone='UTC')"


def test_fill_gaps_carries_previous_close_with_zero_volume() -> None:
    tf = parse_timeframe("1m")
    rows = [candle(0, 100.0), candle(3, 103.0)]
    filled = fill_gaps(rows, tf, end_ms=T0 + 5 * MINUTE_MS)
    assert [c.start_ms - T0 for c in filled] == [m * MINUTE_MS for m in range(5)]
    flat = filled[1]
    assert (flat.open, flat.high, flat.low, flat.close, flat.volume) == (
        100.0,
        100.0,
        100.0,
        100.0,
        0.0,
    )
    assert filled[4].close == 103.0 and filled[4].volume == 0.0
    assert fill_gaps([], tf, end_ms=T0) == []
