"""The run history of ``serve``: every finished warmup (at start, scheduled, manual) and every
backfill job (done, failed, cancelled) becomes a ``RunRecord`` kept in the candle store,
read back by ``GET /api/warmup/history`` and ``/api/backfill/history`` with a summary
(success rate against the 95% target, median and longest duration).

Keeping a run is bookkeeping: the write runs in the background, and a failing one is
logged, never raised into the warmup or job it describes.
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

from .._base.time import format_utc
from .._store.sqlite import CandleStore, RunRecord

__all__ = [
    "SUCCESS_TARGET",
    "history_answer",
    "keep_run",
    "warmup_run",
]

logger = logging.getLogger("marketspine.serve")

SUCCESS_TARGET = 0.95  # the share of runs that must succeed (issue #21)


def warmup_run(
    report: dict[str, Any], trigger: str, started_ms: int, duration_ms: int
) -> RunRecord:
    """The history entry of a warmup that ended with ``report`` (the warmup dictionary)."""
    results = []
    failures = []
    for name, detail in (report.get("exchange_details") or {}).items():
        if not isinstance(detail, dict):  # {"error": "..."}: the warmup failed as a whole
            continue
        ok = bool(detail.get("success"))
        error = None if ok else str(detail.get("error") or "failed")
        results.append(
            {
                "exchange": name,
                "ok": ok,
                "markets": int(detail.get("markets") or 0),
                "duration_ms": detail.get("duration_ms"),
                "error": error,
            }
        )
        if error is not None:
            failures.append(f"{name}: {error}")
    whole = (report.get("exchange_details") or {}).get("error")
    if isinstance(whole, str):
        failures.insert(0, whole)
    return RunRecord(
        "warmup",
        trigger,
        started_ms,
        duration_ms,
        bool(report.get("success")),
        int(report.get("total_markets") or 0),
        tuple(results),
        "; ".join(failures) or None,
    )


async def keep_run(store: CandleStore, run: RunRecord) -> None:
    """Write ``run`` to the history; a failure is logged, never raised."""
    try:
        await store.add_run(run)
    except Exception as exc:
        logger.warning("cannot keep the %s run in the history: %s", run.kind, exc)


def history_answer(kind: str, runs: list[RunRecord]) -> dict[str, Any]:
    """The JSON of ``/api/{kind}/history``: the runs (newest first) and their summary."""
    count = len(runs)
    succeeded = sum(run.ok for run in runs)
    rate = round(succeeded / count, 4) if count else None
    durations = [run.duration_ms for run in runs]
    return {
        "kind": kind,
        "summary": {
            "count": count,
            "succeeded": succeeded,
            "failed": count - succeeded,
            "success_rate": rate,
            "target": SUCCESS_TARGET,
            "meets_target": None if rate is None else rate >= SUCCESS_TARGET,
            "median_duration_ms": statistics.median(durations) if durations else None,
            "max_duration_ms": max(durations) if durations else None,
        },
        "runs": [
            {
                "started": format_utc(run.started_ms) + "Z",
                "started_ms": run.started_ms,
                "duration_ms": run.duration_ms,
                "trigger": run.trigger,
                "ok": run.ok,
                "markets": run.markets,
                "results": list(run.results),
                "error": run.error,
                "label": run.label,
            }
            for run in runs
        ],
    }
