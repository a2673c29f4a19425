"""What the ``collect``, ``export`` and ``status`` commands do (the CLI only parses flags).

Each command validates everything it can before touching the network or the database, so
bad input is one line on stderr and exit code 2 (raised as InvalidRequestError).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._base.durations import parse_moment
from .._base.extras import need
from .._base.markets import market_code
from .._base.time import format_utc, now_ms
from .._base.timeframes import Timeframe, parse_timeframe
from .._base.urls import check_db, check_upstream, is_postgres_url
from .._budget.rules import Priority
from .._store.backfill import CandleSource, CollectSummary, ProgressEvent, collect
from .._store.default_path import sibling_hint
from .._store.sqlite import SQLiteStore
from ..errors import InvalidRequestError, StoreError, UnknownMarketError
from .notes import EXIT_NOTHING_COLLECTABLE, collect_notes, collect_notes_json
from .progress import DEFAULT_EVERY_S, ProgressLines
from .task_dump import dumping_tasks_on_signal

# rich and the client (httpx) load inside the commands that use them: ``status --json``
# and ``export`` start without either.
if TYPE_CHECKING:
    from rich.console import Console

    from .._client.client import Client
    from .._spine.shared import Shared
    from .._store.postgres import PostgresStore
    from ..records import MarketInfo

__all__ = [
    "check_since",
    "default_since",
    "open_store",
    "progress_bar",
    "run_collect",
    "run_status",
    "run_warmup",
]

DEFAULT_PAGES = 1  # without --since, collect one page (200 windows) before --until


def default_since(timeframe: Timeframe, until_ms: int) -> int:
    """200 windows before ``until_ms``: one upstream page per market on a dense market."""
    return timeframe.shift(timeframe.floor(until_ms), -200 * DEFAULT_PAGES)


def check_since(since_ms: int, now: int, whose: str = "now", what: str = "--since") -> None:
    """Raise InvalidRequestError (exit 2) for a start at or after ``now``: no candle can be
    stored from there yet, so collect and export alike call it bad input rather than an
    empty result. ``whose`` names the clock (upstream's, for collect), ``what`` the start."""
    if since_ms >= now:
        raise InvalidRequestError(
            f"{what} {format_utc(since_ms)}Z lies in the future ({whose} is "
            f"{format_utc(now)}Z): give a --since before now (ISO 8601, naive means UTC)"
        )


def _range(
    timeframe: Timeframe, since: str | None, until: str | None, now: int, whose: str = "now"
) -> tuple[int, int]:
    """``[since, until)`` in ms; without --until the end is ``now``, and a duration (``7d``)
    counts back from ``now``. Raises InvalidRequestError for a time neither ISO 8601 nor a
    duration, a --since not before --until, or in the future."""
    until_ms = parse_moment(until, now, "--until") if until else now
    since_ms = parse_moment(since, now, "--since") if since else default_since(timeframe, until_ms)
    if since_ms >= until_ms and until is not None:
        raise InvalidRequestError(
            f"--since ({format_utc(since_ms)}) must be before --until ({format_utc(until_ms)})"
        )
    # Without --since the start is the default one: say so, since no --since was given.
    what = "--since" if since else f"the start {200 * DEFAULT_PAGES} windows before --until,"
    check_since(since_ms, now, whose, what)
    return since_ms, until_ms


def open_store(
    db: str, *, must_exist: bool, read_only: bool = False
) -> SQLiteStore | PostgresStore:
    """The store at ``db`` (an SQLite path or a postgresql:// URL); ``read_only`` never
    creates or changes anything in an SQLite file and checks every page first, so a damaged
    file is an error, not missing rows (status, export).
    Raises StoreError when ``must_exist`` and there is no database, InvalidRequestError
    for a URL of another database."""
    check_db(db, "--db")
    if is_postgres_url(db):
        from .._store.postgres import PostgresStore

        return PostgresStore(db)
    path = Path(db).expanduser()
    if must_exist and not path.exists():
        raise StoreError(
            f"no database at {path}: run `marketspine collect` first or pass --db"
            + sibling_hint(path)
        )
    return SQLiteStore(path, read_only=read_only, verify=read_only)


def run_collect(
    markets: list[str],
    *,
    timeframe: str,
    since: str | None,
    until: str | None,
    db: str,
    upstream: str,
    json_output: bool,
    redis: str | None = None,
    progress_every_s: float = DEFAULT_EVERY_S,
) -> None:
    """Backfill ``markets`` and print a progress bar (terminal) or one JSON line. ``redis``
    shares the rate budget with every process using the same Redis. When stderr is no
    terminal, a plain progress line goes there at most every ``progress_every_s`` seconds
    (0: never), ``--json`` or not: stdout keeps only the summary."""
    check_upstream(upstream, "--upstream")
    tf = parse_timeframe(timeframe)
    codes: list[str] = [market_code(m) for m in markets]
    # Bad times fail here, before any request; "now" is upstream's, learned in _collect.
    _range(tf, since, until, now_ms())
    progress: Literal["bar", "lines"] | None
    if sys.stderr.isatty():
        progress = "bar" if not json_output else None
    else:
        progress = "lines" if progress_every_s > 0 else None
    summary = asyncio.run(
        _collect(
            codes,
            tf,
            since,
            until,
            db=db,
            upstream=upstream,
            progress=progress,
            progress_every_s=progress_every_s,
            redis=redis,
        )
    )
    if json_output:
        print(json.dumps(_summary_json(summary), separators=(",", ":")))
    else:
        # plain print: one line even on a pipe, where rich would wrap at 80 columns
        print(
            f"collected {summary.candles_written:,} {tf.name} candles for "
            f"{', '.join(summary.markets)} in {summary.seconds:.1f} s "
            f"({summary.upstream_calls} upstream calls)"
        )
    for line in collect_notes(summary):
        print(f"marketspine: {line}", file=sys.stderr)
    if not summary.collectable:
        raise SystemExit(EXIT_NOTHING_COLLECTABLE)


def _summary_json(summary: CollectSummary) -> dict[str, Any]:
    return {
        "markets": list(summary.markets),
        "timeframe": summary.timeframe,
        "candles_written": summary.candles_written,
        "upstream_calls": summary.upstream_calls,
        "seconds": round(summary.seconds, 3),
        **collect_notes_json(summary),
    }


async def _collect(
    codes: list[str],
    tf: Timeframe,
    since: str | None,
    until: str | None,
    *,
    db: str,
    upstream: str,
    progress: Literal["bar", "lines"] | None,
    progress_every_s: float = DEFAULT_EVERY_S,
    redis: str | None = None,
) -> CollectSummary:
    from .._client.client import Client
    from .._spine.candles import MarketsFromCache

    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(dumping_tasks_on_signal())
        shared = None
        if redis:
            need("redis")
            from .._spine.shared import open_shared  # loads redis only when used

            shared = await stack.enter_async_context(open_shared(redis, upstream=upstream))
        store = open_store(db, must_exist=False)
        await stack.enter_async_context(store)
        client = await stack.enter_async_context(
            Client(upstream, budget=shared.budget if shared else None)
        )
        until_hint = parse_moment(until, now_ms(), "--until") if until else None
        try:
            now = await client.synced_now_ms(codes[0], until_ms=until_hint, priority=Priority.LOW)
        except UnknownMarketError:
            # Delisted (or never listed): its 404 still told upstream's clock, and collect
            # says which it is.
            now = client.upstream_now_ms()
        # Checked again on upstream's clock, which a local clock running ahead misjudges.
        since_ms, until_ms = _range(tf, since, until, now, "upstream's now")
        source: CandleSource = client
        if shared is not None:  # the market list a warmup left in Redis, when it lists them all
            source = MarketsFromCache(client, partial(_listed, shared, client, upstream, codes))
        # Made here, so that lines count elapsed time and ETA from the first page asked for.
        with _progress(progress, codes, tf, progress_every_s) as on_progress:
            return await collect(
                source,
                store,
                codes,
                tf,
                since_ms=since_ms,
                until_ms=until_ms,
                now_ms=now,
                priority=Priority.LOW,
                progress=on_progress,
                leases=shared.leases if shared else None,
                # Kill -9 or Ctrl-C, then a rerun: the same database as one run, to the row.
                keep_below=False,
                # Collectors on one Redis whose ranges overlap then ask the same pages there.
                grid=shared is not None,
            )


def _progress(
    kind: Literal["bar", "lines"] | None, codes: list[str], tf: Timeframe, every_s: float
) -> contextlib.AbstractContextManager[Callable[[ProgressEvent], None] | None]:
    """The ``progress`` callback for ``collect`` (None: none), as a context manager."""
    if kind == "bar":
        from rich.console import Console

        return progress_bar(Console(stderr=True))
    if kind == "lines":
        write = partial(print, file=sys.stderr, flush=True)
        return contextlib.nullcontext(ProgressLines(write, codes, tf.name, every_s=every_s))
    return contextlib.nullcontext(None)


async def _listed(
    shared: Shared, client: Client, upstream: str, codes: list[str]
) -> Sequence[MarketInfo]:
    """The markets the shared catalog lists for ``upstream``, if it lists all of ``codes``
    (then collect asks upstream for candle pages only); else upstream's list."""
    listed = await shared.catalog.listed(upstream, codes)
    return listed if listed is not None else await client.markets()


@contextlib.contextmanager
def progress_bar(console: Console) -> Iterator[Callable[[ProgressEvent], None]]:
    """A rich progress bar per market (share covered, candles, candles/s, ETA); yields the
    ``progress`` callback for ``collect``."""
    from rich.progress import (
        BarColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[candles]:>9,} candles"),
        TextColumn("{task.fields[rate]:>7,.0f} candles/s", style="dim"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(event: ProgressEvent) -> None:
            task = tasks.get(event.market)
            if task is None:
                task = tasks[event.market] = bar.add_task(
                    f"{event.market} {event.timeframe}",
                    total=max(event.total_ms, 1),
                    candles=0,
                    rate=0.0,
                )
            elapsed = next(t.elapsed for t in bar.tasks if t.id == task) or 0.0
            bar.update(
                task,
                completed=event.done_ms if not event.finished else max(event.total_ms, 1),
                candles=event.candles_written,
                rate=event.candles_written / elapsed if elapsed > 0 else 0.0,
            )

        yield on_progress


def _stdout_console() -> Console:
    """Rich on a terminal; on a pipe or file, wide enough that no value is cut or wrapped."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(width=10_000, no_color=True)


def run_status(*, db: str, json_output: bool) -> None:
    """Print what the store holds: series, covered ranges, row counts."""
    series, delisted, recorded = asyncio.run(_summary(db))
    if json_output:
        document = {"db": db, "series": series, "delisted": delisted, "recorded": recorded}
        print(json.dumps(document, separators=(",", ":")))
        return
    from rich.table import Table

    table = Table(title=f"marketspine store {db}")
    for column in ("market", "timeframe", "rows", "first", "last", "covered ranges", "listing"):
        table.add_column(column)
    for s in series:
        table.add_row(
            s["market"],
            s["timeframe"],
            f"{s['rows']:,}",
            s["first"] or "-",
            s["last"] or "-",
            "\n".join(f"{a} → {b}" for a, b in s["ranges"]) or "-",
            s["listing"] or "-",
        )
    console = _stdout_console()
    if series:
        console.print(table)
    else:  # rather than a table of headers alone
        console.print(f"no candles stored in {db} (marketspine collect stores them)")
    if recorded:
        console.print(_recorded_table(recorded))
    for gone in delisted:
        console.print(
            f"{gone['market']}: delisted (upstream answers 404 since {gone['seen']}); last "
            f"trade {gone['last_trade'] or '-'}; its stored candles are kept and served"
        )


def _recorded_table(recorded: list[dict[str, Any]]) -> Any:
    """What ``marketspine record`` kept, a row per market and kind."""
    from rich.table import Table

    table = Table(title="recorded (marketspine record)")
    for column in ("market", "kind", "rows", "first", "last", "known gaps"):
        table.add_column(column)
    for held in recorded:
        gaps = "\n".join(
            f"{g['from']} → {g['to']} (sequential_id {g['from_seq']} → {g['to_seq']}): "
            f"{g['reason']}"
            for g in held["gaps"]
        )
        table.add_row(
            held["market"],
            held["kind"],
            f"{held['rows']:,}",
            held["first"],
            held["last"],
            gaps or ("none" if held["kind"] == "trades" else "-"),
        )
    return table


async def _summary(
    db: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(series, delisted markets with when that was seen and their last stored trade, what
    is recorded per market and kind with its known gaps)."""
    from .._store.recording_reads import recording_summary
    from .._store.recording_store import recording_for

    async with open_store(db, must_exist=True, read_only=True) as store:
        rows = await store.summary()
        delisted = await store.delisted()
        holdings = await recording_summary(recording_for(store))

    def label(ms: int | None) -> str | None:
        return None if ms is None else format_utc(ms) + "Z"

    recorded = [
        {
            "market": h.market,
            "kind": h.kind,
            "rows": h.rows,
            "first": label(h.first_ms),
            "last": label(h.last_ms),
            "gaps": [
                {
                    "from": label(g.from_ms),
                    "to": label(g.to_ms),
                    "from_seq": g.from_seq,
                    "to_seq": g.to_seq,
                    "reason": g.reason,
                }
                for g in h.gaps
            ],
        }
        for h in holdings
    ]

    last_trade: dict[str, int] = {}
    for s in rows:
        if s.last_trade_ms is not None:
            last_trade[s.market] = max(last_trade.get(s.market, 0), s.last_trade_ms)
    gone = [
        {"market": m, "seen": label(seen), "last_trade": label(last_trade.get(m))}
        for m, seen in sorted(delisted.items())
    ]
    series = [
        {
            "market": s.market,
            "timeframe": s.timeframe,
            "rows": s.rows,
            "first": label(s.first_ms),
            "last": label(s.last_ms),
            "ranges": [[label(a), label(b)] for a, b in s.ranges],
            "listing": label(s.listing_ms),
            "delisted": s.market in delisted,
        }
        for s in rows
    ]
    return series, gone, recorded


def run_warmup(*, upstream: str, exchanges: list[str], db: str, json_output: bool) -> None:
    """Warm up every configured exchange and print the report; exit 1 if any failed."""
    from .._spine.spine import Spine

    check_upstream(upstream, "--upstream")
    check_db(db, "--db")
    configured = {"upbit": upstream}
    for item in exchanges:
        name, sep, url = item.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise InvalidRequestError(f"invalid --exchange {item!r}: expected NAME=http(s)://HOST")
        configured[name] = url

    # A postgresql:// URL is no path: no folder to make for it.
    store: Path | str = db
    if not is_postgres_url(db):
        path = store = Path(db).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot use --db {path}: its folder {path.parent} cannot be created "
                f"({exc.strerror or exc})"
            ) from None

    async def go() -> dict[str, Any]:
        async with Spine(upstream, store, exchanges=configured, warmup_every_s=0) as spine:
            return await spine.warmup()

    report = asyncio.run(go())
    if json_output:
        print(json.dumps(report, separators=(",", ":"), ensure_ascii=False))
    else:
        from rich.table import Table

        table = Table(
            title=f"warmup: {report['total_markets']} markets in {report['execution_time']:.2f} s"
        )
        for column in ("exchange", "ok", "markets", "instruments", "error"):
            table.add_column(column)
        for name, detail in report["exchange_details"].items():
            table.add_row(
                name,
                "yes" if detail["success"] else "no",
                str(detail.get("markets", "-")),
                str(detail.get("instruments", "-")),
                detail.get("error", ""),
            )
        _stdout_console().print(table)
    if not report["success"]:
        raise SystemExit(1)
