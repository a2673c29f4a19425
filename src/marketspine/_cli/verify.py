"""``marketspine verify``: candles built from recorded trades against upstream's, per window;
each window that differs is one line, then a summary. Exit 0 when every window agrees, 1 when
one differs, 3 when nothing of the market is recorded."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from .._base.durations import parse_moment
from .._base.markets import market_code
from .._base.time import format_utc, now_ms
from .._base.timeframes import parse_timeframe
from .._base.urls import check_db, check_upstream, is_postgres_url
from .._spine.verify import VerifyReport, verify_recording
from ..errors import InvalidRequestError, StoreError

__all__ = ["EXIT_DIFFERS", "run_verify"]

EXIT_DIFFERS = 1
EXIT_NOTHING_RECORDED = 3
SHOWN = 20  # differing windows printed; --json lists them all


def run_verify(
    market: str,
    *,
    timeframe: str,
    since: str | None,
    until: str | None,
    db: str,
    upstream: str,
    json_output: bool,
) -> None:
    """Compare and report. Raises InvalidRequestError (exit 2) for bad input."""
    code = market_code(market)
    tf = parse_timeframe(timeframe)
    check_upstream(upstream, "--upstream")
    check_db(db, "--db")
    now = now_ms()
    since_ms = parse_moment(since, now, "--since") if since else None
    until_ms = parse_moment(until, now, "--until") if until else None
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise InvalidRequestError("--since must be before --until")
    if not is_postgres_url(db) and not Path(db).expanduser().exists():
        raise StoreError(f"no database at {db}: run `marketspine record {code}` first")
    report = asyncio.run(_verify(code, tf.name, since_ms, until_ms, db, upstream))
    if report is None:
        print(f"marketspine: nothing of {code} is recorded in {db}: run `marketspine record "
              f"{code}` first", file=sys.stderr)  # fmt: skip
        raise SystemExit(EXIT_NOTHING_RECORDED)
    if json_output:
        print(json.dumps(_as_json(report), separators=(",", ":")))
    else:
        for diff in report.differences[:SHOWN]:
            print(f"{format_utc(diff.start_ms)}Z differs in {', '.join(diff.fields)}: "
                  f"recorded {_shown(diff.built)} upstream {_shown(diff.upstream)}")  # fmt: skip
        if len(report.differences) > SHOWN:
            print(f"... and {len(report.differences) - SHOWN} more windows")
        span = f"{format_utc(report.start_ms)}Z to {format_utc(report.end_ms)}Z"
        print(
            f"{report.windows:,} {report.timeframe} windows of {code} compared ({span}): "
            f"{len(report.differences)} differ, {len(report.gap_windows)} left out for "
            "known gaps"
        )
    if report.differences:
        raise SystemExit(EXIT_DIFFERS)


def _shown(candle: Any) -> str:
    if candle is None:
        return "none"
    return (f"o={candle.open} h={candle.high} l={candle.low} c={candle.close} "
            f"v={candle.volume} value={candle.value}")  # fmt: skip


def _as_json(report: VerifyReport) -> dict[str, Any]:
    def candle(c: Any) -> dict[str, Any] | None:
        if c is None:
            return None
        return {k: getattr(c, k) for k in ("open", "high", "low", "close", "volume", "value")}

    return {
        "market": report.market,
        "timeframe": report.timeframe,
        "start_ms": report.start_ms,
        "end_ms": report.end_ms,
        "windows": report.windows,
        "gap_windows": report.gap_windows,
        "differences": [
            {"start_ms": d.start_ms, "fields": list(d.fields), "recorded": candle(d.built),
             "upstream": candle(d.upstream)}
            for d in report.differences
        ],
    }  # fmt: skip


async def _verify(
    market: str, timeframe: str, since_ms: int | None, until_ms: int | None, db: str, upstream: str
) -> VerifyReport | None:
    from .._spine.spine import Spine

    async with Spine(upstream, db=db) as spine:
        return await verify_recording(spine, market, parse_timeframe(timeframe), since_ms, until_ms)
