"""The ``marketspine`` command line: thin calls into the library, never the reverse.

Written with plain click, so usage errors are click's usual message and exit 2, flags show
as flags and arguments by name. Exit codes (also in ``--help`` and the README):
0 done, 1 upstream or run failure (the database out of reach too: a supervisor restarts it),
2 bad input (usage, values, unusable database or output file), 3 nothing to export or
collect (stderr says why), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from .._store.default_path import DEFAULT_UPSTREAM, default_db_path

if TYPE_CHECKING:
    from .._spine.recording import RecordPlan

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING_STORED = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "\b\nExit codes: 0 done; 1 upstream or run failure, or database out of reach;\n"
    "2 bad input (usage, values, unusable database or output file);\n"
    "3 nothing to export or collect (stderr says why); 130 interrupted."
)

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: looked up only when asked, since importlib.metadata costs every
    other command a noticeable part of its start-up."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("marketspine")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "unknown"
    click.echo(f"marketspine, version {found}")
    ctx.exit()


@click.group(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@click.option(
    "--version",
    "-V",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def app() -> None:
    """Upbit market data, fetched once, kept locally, served fast.

    \b
    Example:
      marketspine sim --port 8765 &
      marketspine collect KRW-BTC -t 1m --since 2026-01-01 --until 2026-01-03 \\
        --upstream http://127.0.0.1:8765
    """


_DB_WHAT = "SQLite file or a postgresql://USER@HOST:PORT/DB URL"
# The commands with --upstream; the readers' default names no flag they lack.
_db_option = click.option(
    "--db",
    metavar="PATH|URL",
    default=None,
    help=f"{_DB_WHAT} (default: marketspine.db in the user data directory for api.upbit.com; "
    "any other --upstream, such as a simulator, gets marketspine-HOST_PORT.db beside it, so "
    "its candles never mix with real ones).",
)
_stored_db_option = click.option(
    "--db",
    metavar="PATH|URL",
    default=None,
    help=f"{_DB_WHAT} (default: marketspine.db in the user data directory, what was fetched "
    "from api.upbit.com; what came from another upstream, such as a simulator, is in "
    "marketspine-HOST_PORT.db beside it).",
)


def _upstream_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--upstream",
        metavar="URL",
        default=DEFAULT_UPSTREAM,
        show_default=True,
        help="Upbit REST base URL (or a simulator's).",
    )(func)


def _timeframe_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--timeframe",
        "-t",
        metavar="TF",
        required=True,
        help="1s 1m 3m 5m 10m 15m 30m 1h 4h 1d 1w 1M 1y (60m, 240m accepted).",
    )(func)


def _until_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--until",
        metavar="TIME",
        default=None,
        help="ISO 8601 end, exclusive, or a duration back from now such as 3d (default: now).",
    )(func)


def _operations_options(func: click.decorators.FC) -> click.decorators.FC:
    """``--notify``, ``--log-level`` and ``--log-format`` (serve, collect, warmup)."""
    func = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: one JSON object per line (time, level, logger, message, event, "
        "details), for log shippers.",
    )(func)
    func = click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        default="warning",
        show_default=True,
        help="Least severe log lines shown on stderr (info: each refresh and exchange).",
    )(func)
    return _notify_option(func)


def _notify_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--notify",
        metavar="URL",
        multiple=True,
        envvar="MARKETSPINE_NOTIFY",
        help="Send alerts (bans, circuit, failed refreshes, lost Redis/database, ...) to "
        "this apprise URL, e.g. tgram://BOTTOKEN/CHATID or json://HOST:PORT/ (repeatable; "
        "default: $MARKETSPINE_NOTIFY, comma or space separated).",
    )(func)


# A port outside 0..65535 is a usage error (exit 2), not an OverflowError from bind().
_PORT = click.IntRange(0, 65535)


@app.command(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=_PORT, default=8765, show_default=True, help="TCP port (0: any free).")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same history.")
@click.option("--region", default="kr", show_default=True, help="Mimic Upbit's kr, sg, id or th.")
@click.option("--latency-ms", type=float, default=0.0, help="Added latency per request.")
@click.option("--jitter-ms", type=float, default=0.0, help="Random extra latency, up to this.")
@click.option(
    "--connect-ms",
    type=float,
    default=0.0,
    help="Added to a new connection's first request (TCP + TLS handshakes: about 2 latencies).",
)
@click.option("--error-rate", type=float, default=0.0, help="Share of requests answered 5xx.")
@click.option("--hang-rate", type=float, default=0.0, help="Share of requests never answered.")
@click.option(
    "--rate-limit",
    type=int,
    default=10,
    show_default=True,
    help="Requests/s per group per client; 0 = none.",
)
@click.option("--markets", type=int, default=30, show_default=True, help="Markets to list.")
@click.option("--speed", type=float, default=1.0, help="Simulated time runs this much faster.")
@click.option(
    "--ws-drop-every-s",
    type=float,
    default=0.0,
    help="Cut each WebSocket every N s without a close frame; 0 = never.",
)
@click.option(
    "--ws-stall-every-s",
    type=float,
    default=0.0,
    help="Each WebSocket goes silent (no data, no pongs) every N s.",
)
@click.option(
    "--ws-idle-timeout-s",
    type=float,
    default=120.0,
    show_default=True,
    help="Close WebSockets idle this long.",
)
def sim(
    host: str,
    port: int,
    seed: int,
    region: str,
    latency_ms: float,
    jitter_ms: float,
    connect_ms: float,
    error_rate: float,
    hang_rate: float,
    rate_limit: int,
    markets: int,
    speed: float,
    ws_drop_every_s: float,
    ws_stall_every_s: float,
    ws_idle_timeout_s: float,
) -> None:
    """Run a faithful offline Upbit (REST and WebSocket) until stopped.

    \b
    Example:
      marketspine sim --port 8765 --seed 1 --speed 60
    """
    from .._base.extras import need

    need("sim")  # one line naming the extra, not an ImportError from inside the simulator
    from ..sim import SimConfig, serve

    config = SimConfig(
        seed=seed,
        region=region,
        markets=markets,
        speed=speed,
        rate_limit=rate_limit,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        connect_ms=connect_ms,
        error_rate=error_rate,
        hang_rate=hang_rate,
        ws_drop_every_s=ws_drop_every_s,
        ws_stall_every_s=ws_stall_every_s,
        ws_idle_timeout_s=ws_idle_timeout_s,
    )
    # uvicorn re-raises the Ctrl-C it shut down on; for a server that is the normal way
    # to stop, so exit 0.
    with contextlib.suppress(KeyboardInterrupt):
        serve(config, host=host, port=port)


def _default_db(upstream: str = DEFAULT_UPSTREAM) -> str:
    return str(default_db_path(upstream))


@app.command(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("markets", metavar="MARKET...", nargs=-1, required=True)
@_timeframe_option
@click.option(
    "--since",
    metavar="TIME",
    default=None,
    help=(
        "ISO 8601 start (naive means UTC), or a duration back from now such as 7d "
        "(default: 200 windows before --until)."
    ),
)
@_until_option
@_db_option
@_upstream_option
@click.option(
    "--json", "json_output", is_flag=True, help="Print a one-line JSON summary (no progress bar)."
)
@click.option(
    "--redis",
    metavar="URL",
    default=None,
    help="Share the rate budget, page fetches and market catalog with every process using "
    "this Redis (redis://HOST:PORT/DB).",
)
@click.option(
    "--progress-every",
    "progress_every_s",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=10.0,  # _progress_lines.DEFAULT_EVERY_S, which the CLI does not load to parse
    show_default=True,
    help="When stderr is no terminal (a pipe, a log), print a progress line there at most "
    "this often; 0 = never.",
)
@_operations_options
def collect(
    markets: tuple[str, ...],
    timeframe: str,
    since: str | None,
    until: str | None,
    db: str | None,
    upstream: str,
    json_output: bool,
    redis: str | None,
    progress_every_s: float,
    notify: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Backfill closed candles of MARKET... (codes such as KRW-BTC) into the store:
    resumable, exact, at the rate-limit ceiling. A progress bar on a terminal (a progress
    line every 10 s in a log), then a one-line summary.

    \b
    Example:
      marketspine collect KRW-BTC KRW-ETH -t 1m --since 2026-01-01 --until 2026-01-02
    """
    from .commands import run_collect
    from .logs import operations, url_password

    with operations(
        log_level=log_level,
        log_format=log_format,
        notify=notify,
        secrets=[url_password(db), url_password(redis)],
    ):
        log = logging.getLogger("marketspine.collect")
        log.info("collect: %d market(s) at %s from %s", len(markets), timeframe, upstream)
        started = time.perf_counter()
        run_collect(
            list(markets),
            timeframe=timeframe,
            since=since,
            until=until,
            db=db or _default_db(upstream),
            upstream=upstream,
            json_output=json_output,
            redis=redis,
            progress_every_s=progress_every_s,
        )
        log.info("collect: done in %.1f s", time.perf_counter() - started)


@app.command(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("markets", metavar="MARKET...", nargs=-1)
@click.option(
    "--quote", metavar="CURRENCY", default=None, help="Every listed market quoted in it (KRW)."
)
@click.option(
    "--kinds",
    metavar="KINDS",
    default="trade,orderbook,ticker",
    show_default=True,
    help="What to record, comma separated: trade, orderbook, ticker.",
)
@click.option(
    "--orderbook-every",
    metavar="DURATION",
    default="1s",
    show_default=True,
    help="At most one book per market this often (exchange time); 0 = every change.",
)
@click.option(
    "--orderbook-depth",
    type=click.Choice(["15", "30"]),
    default="30",
    show_default=True,
    help="Levels of each book kept.",
)
@click.option(
    "--backfill",
    metavar="DURATION",
    default="7d",
    show_default=True,
    help="At start, fill the store's trade holes this far back from REST at LOW priority "
    "(Upbit serves 7 days of trades); 0 = none.",
)
@click.option(
    "--keep",
    metavar="SPAN",
    default="0",
    show_default=True,
    help="Prune, in the background, the recorded rows of these markets older than this: one "
    "duration for every kind (90d) or KIND=DURATION pairs (trade=90d,orderbook=7d,ticker=7d; "
    "a kind not named is kept); known gaps older than the trades' span go too. 0 = keep all.",
)
@_db_option
@_upstream_option
@click.option(
    "--redis",
    metavar="URL",
    default=None,
    help="Take turns with every recorder of the same --db on this Redis "
    "(redis://HOST:PORT/DB): one writes, the others stand by and take over when it dies; "
    "the rate budget and live feed are shared too.",
)
@click.option("--json", "json_output", is_flag=True, help="Print the summary as one JSON line.")
@_operations_options
def record(
    markets: tuple[str, ...],
    quote: str | None,
    kinds: str,
    orderbook_every: str,
    orderbook_depth: str,
    backfill: str,
    keep: str,
    db: str | None,
    upstream: str,
    redis: str | None,
    json_output: bool,
    notify: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Keep every trade (exactly once, by sequential_id, holes filled from REST or stored
    as known gaps), orderbook snapshots and tickers of MARKET... (or all, or --quote KRW)
    until Ctrl-C or SIGTERM, which commit what is held; then print a summary. A rerun
    continues right after the last stored trade. With --redis, several recorders of one
    database take turns: one writes at a time, another takes over within seconds of its
    death and continues from its last stored trade.

    \b
    Example:
      marketspine record --quote KRW --db krw.db
      marketspine record KRW-BTC KRW-ETH --kinds trade --db postgresql://postgres@127.0.0.1/test
      marketspine record --quote KRW --db postgresql://HOST/md --redis redis://HOST:6379/0
    """
    from .logs import operations, url_password
    from .record import run_record

    with operations(
        log_level=log_level,
        log_format=log_format,
        notify=notify,
        secrets=[url_password(db), url_password(redis)],
    ):
        run_record(
            markets,
            quote=quote,
            kinds=kinds,
            orderbook_every=orderbook_every,
            orderbook_depth=int(orderbook_depth),
            backfill=backfill,
            db=db or _default_db(upstream),
            upstream=upstream,
            redis=redis,
            json_output=json_output,
            keep=keep,
        )


@app.command(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@click.option(
    "--from",
    "source",
    metavar="PATH|URL",
    required=True,
    help="SQLite file (or postgresql:// URL) to copy.",
)
@click.option(
    "--to", "target", metavar="URL|PATH", required=True, help="postgresql:// URL (or a file)."
)
@click.option("--json", "json_output", is_flag=True, help="Print a one-line JSON summary.")
def migrate(source: str, target: str, json_output: bool) -> None:
    """Copy a candle database (candles, coverage, listings, the recording and the run
    history) to another, then verify row counts, first/last candle and coverage of every
    series. Rerunning resumes.

    \b
    Example:
      marketspine migrate --from ./spine.db --to postgresql://postgres@127.0.0.1/test
    """
    import json

    from .._store.migrate import migrate_databases

    report = migrate_databases(source, target)
    summary = {
        "series": report.series,
        "candles": report.candles,
        "ranges": report.ranges,
        "recorded_rows": report.recorded_rows,
        "runs": report.runs,
        "runs_added": report.runs_added,
        "seconds": round(report.seconds, 3),
        "verified": True,
    }
    if json_output:
        print(json.dumps(summary, separators=(",", ":")))
    else:
        print(
            f"migrated {report.candles:,} candles in {report.series} series "
            f"({report.ranges} covered ranges), {report.recorded_rows:,} recorded trades, "
            f"books, tickers and known gaps, and {report.runs:,} runs of the run history "
            f"({report.runs_added:,} new) in {report.seconds:.1f} s; counts and coverage "
            "verified"
        )


@app.command(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("market", metavar="MARKET")
@click.option(
    "--timeframe",
    "-t",
    metavar="TF",
    default=None,
    help="1s 1m 3m 5m 10m 15m 30m 1h 4h 1d 1w 1M 1y (60m, 240m accepted); candles only.",
)
@click.option(
    "--kind",
    type=click.Choice(["candles", "trades", "orderbooks", "tickers"]),
    default="candles",
    show_default=True,
    help="What to export: candles, or what `record` kept.",
)
@click.option(
    "--split",
    type=click.Choice(["none", "day"]),
    default="none",
    show_default=True,
    help="day: one file per UTC day into the folder --out (recorded kinds).",
)
@click.option(
    "--out",
    "-o",
    metavar="FILE",
    required=True,
    help="File to write (replaced whole); - writes CSV to standard output.",
)
@click.option(
    "--format",
    "export_format",
    metavar="csv|parquet",
    default="csv",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--since",
    metavar="TIME",
    default=None,
    help=(
        "ISO 8601 start (naive means UTC), or a duration back from now such as 7d "
        "(default: from the first stored candle)."
    ),
)
@_until_option
@_stored_db_option
def export(
    market: str,
    timeframe: str | None,
    kind: str,
    split: str,
    out: str,
    export_format: str,
    since: str | None,
    until: str | None,
    db: str | None,
) -> None:
    """Write the stored candles of MARKET (such as KRW-BTC) to CSV or Parquet: columns
    time_utc,open,high,low,close,volume,value, ascending, only candles that exist. 3m to 1d
    are also built from stored 1m candles, as the library does. Exits 3 when nothing is
    stored in the range.

    With --kind trades, orderbooks or tickers: what `record` kept, a row each (time_utc
    with milliseconds, timestamp_ms, every field; a book's levels as columns).

    \b
    Example:
      marketspine export KRW-BTC -t 5m --since 2026-01-01 --out btc-5m.csv
      marketspine export KRW-BTC --kind trades --format parquet --split day --out trades/
    """
    if kind != "candles":
        from .export_recorded import run_export_recorded

        run_export_recorded(
            market,
            kind=kind,
            since=since,
            until=until,
            db=db or _default_db(),
            export_format=export_format,
            out=out,
            split=split,
        )
        return
    if timeframe is None:
        raise click.UsageError("Missing option '--timeframe' / '-t' (candles need one).")
    if split != "none":
        raise click.UsageError("--split day is for --kind trades, orderbooks or tickers.")
    from .export import run_export

    run_export(
        market,
        timeframe=timeframe,
        since=since,
        until=until,
        db=db or _default_db(),
        export_format=export_format,
        out=out,
    )


@app.command(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("market", metavar="MARKET")
@click.option(
    "--timeframe", "-t", metavar="TF", default="1m", show_default=True, help="Candle windows."
)
@click.option(
    "--since",
    metavar="TIME",
    default=None,
    help="ISO 8601 start or a duration back such as 7d (default: all).",
)
@_until_option
@_db_option
@_upstream_option
@click.option("--json", "json_output", is_flag=True, help="Print the report as one JSON line.")
def verify(
    market: str,
    timeframe: str,
    since: str | None,
    until: str | None,
    db: str | None,
    upstream: str,
    json_output: bool,
) -> None:
    """Build candles from the trades `record` kept of MARKET and compare them with
    upstream's, window by window (whole windows only; those a known gap touches are left
    out and counted). Prints each window that differs; exits 1 when one does.

    \b
    Example:
      marketspine verify KRW-BTC --since 2026-12-01 --db krw.db
    """
    from .verify import run_verify

    run_verify(
        market,
        timeframe=timeframe,
        since=since,
        until=until,
        db=db or _default_db(upstream),
        upstream=upstream,
        json_output=json_output,
    )


@app.command(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@_stored_db_option
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def status(db: str | None, json_output: bool) -> None:
    """What is stored: markets, timeframes, covered ranges, row counts (opens the
    database read-only).

    \b
    Example:
      marketspine status --db ./spine.db --json
    """
    from .commands import run_status

    run_status(db=db or _default_db(), json_output=json_output)


@app.command(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@_upstream_option
@click.option(
    "--exchange",
    metavar="NAME=URL",
    multiple=True,
    help="Another exchange (repeatable), e.g. upbit-sg=https://sg-api.upbit.com.",
)
@_db_option
@click.option("--json", "json_output", is_flag=True, help="Print the JSON report.")
@_operations_options
def warmup(
    upstream: str,
    exchange: tuple[str, ...],
    db: str | None,
    json_output: bool,
    notify: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Fetch market lists and instruments (tick sizes, levels) of every configured
    exchange. Exits 1 when any exchange failed.

    \b
    Example:
      marketspine warmup --exchange upbit-sg=https://sg-api.upbit.com --json
    """
    from .commands import run_warmup
    from .logs import operations, url_password

    with operations(
        log_level=log_level, log_format=log_format, notify=notify, secrets=[url_password(db)]
    ):
        run_warmup(
            upstream=upstream,
            exchanges=list(exchange),
            db=db or _default_db(upstream),
            json_output=json_output,
        )


@app.command(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@click.option(
    "--upstream",
    metavar="URL|sim",
    default=DEFAULT_UPSTREAM,
    show_default=True,
    help="Upbit REST base URL, or 'sim' for the built-in simulator in this process.",
)
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=_PORT, default=8600, show_default=True, help="TCP port (0: any free).")
@click.option(
    "--admin-token",
    metavar="TOKEN",
    default=None,
    help="Bearer token of the admin API (default: $MARKETSPINE_ADMIN_TOKEN, else one "
    "generated at first start, kept beside the database with 0600 permissions).",
)
@click.option(
    "--read-token",
    metavar="TOKEN",
    default=None,
    help="Bearer token that may read /api but change nothing (default: "
    "$MARKETSPINE_READ_TOKEN, else none: reads need the admin token or an admin session).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    metavar="NAME",
    multiple=True,
    help="A host name clients may reach serve by (a TLS proxy's, a LAN name); repeatable. "
    "Besides it only IP addresses, localhost and --host are answered (DNS rebinding).",
)
@click.option(
    "--redis",
    metavar="URL",
    default=None,
    help="Share the rate budget, page fetches, market catalog and live feed (one upstream "
    "WebSocket, held by one process) with every process using this Redis "
    "(redis://HOST:PORT/DB).",
)
@click.option(
    "--ws-max-per-ip",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="WebSocket connections open at once from one client address; more are refused.",
)
@click.option(
    "--forwarded-allow-ips",
    "forwarded_allow_ips",
    metavar="IP[/BITS]",
    multiple=True,
    help="A proxy in front of serve (address or network; repeatable or comma-separated): "
    "only its X-Forwarded-For is believed. Without it every limit (login lock-out, "
    "--ws-max-per-ip, the per-client share) keys on the connecting address.",
)
@click.option(
    "--record",
    "record_kinds",
    metavar="KINDS",
    default=None,
    help="Also record these kinds (trade, orderbook, ticker; comma separated) of "
    "--record-markets into --db, as `marketspine record` does; with --redis one process "
    "records at a time (the recorder lease of `record --redis`).",
)
@click.option(
    "--record-markets",
    metavar="MARKETS",
    default=None,
    help="What --record keeps: market codes (KRW-BTC,KRW-ETH), all, or a quote currency "
    "(KRW: every market quoted in it).",
)
@click.option(
    "--record-orderbook-every",
    metavar="DURATION",
    default="1s",
    show_default=True,
    help="With --record: at most one book per market this often (exchange time); 0 = all.",
)
@_operations_options
def serve(
    upstream: str,
    db: str | None,
    host: str,
    port: int,
    admin_token: str | None,
    read_token: str | None,
    allowed_hosts: tuple[str, ...],
    redis: str | None,
    ws_max_per_ip: int,
    forwarded_allow_ips: tuple[str, ...],
    record_kinds: str | None,
    record_markets: str | None,
    record_orderbook_every: str,
    notify: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Serve every client on the host from one rate budget, cache and live feed:
    Upbit-compatible REST at /v1/..., its own JSON API at /api/ (OpenAPI at
    /api/openapi.json; a bearer token required), /healthz, /metrics and POST
    /admin/api/refresh-market-info. Prints 'serving on http://HOST:PORT' when ready;
    stops on Ctrl-C or SIGTERM.

    \b
    Example:
      marketspine serve --upstream sim --port 8600
      marketspine serve --record trade,orderbook --record-markets KRW --db krw.db
    """
    import os

    from .._base.extras import need

    # Checked before anything starts, so a missing extra is one line, not a traceback.
    need("serve")
    if upstream == "sim":
        need("sim")
    plan = _record_plan(record_kinds, record_markets, record_orderbook_every)

    from .._serve.app import run_serve
    from .logs import operations, url_password
    from .task_dump import dumping_on_signal

    secrets = [admin_token, os.environ.get("MARKETSPINE_ADMIN_TOKEN"), read_token]
    with (
        dumping_on_signal(),
        operations(
            log_level=log_level,
            log_format=log_format,
            notify=notify,
            secrets=[*secrets, url_password(db), url_password(redis)],
        ) as redact,
    ):
        run_serve(
            upstream=_simulator if upstream == "sim" else upstream,
            db=db or _default_db(upstream),
            host=host,
            port=port,
            admin_token=admin_token,
            read_token=read_token,
            allowed_hosts=allowed_hosts,
            redis=redis,
            ws_max_per_ip=ws_max_per_ip,
            forwarded_allow_ips=forwarded_allow_ips,
            keep_secret=lambda token: redact.add([token]),
            record=plan,
        )


def _record_plan(kinds: str | None, markets: str | None, orderbook_every: str) -> RecordPlan | None:
    """``serve --record``'s flags checked (a ``RecordPlan``, or None without them).

    Raises InvalidRequestError (exit 2) for bad kinds, markets or duration, or one of
    --record and --record-markets without the other."""
    from ..errors import InvalidRequestError

    if kinds is None and markets is None:
        return None
    if kinds is None or markets is None:
        raise InvalidRequestError(
            "--record KINDS and --record-markets MARKETS go together "
            "(e.g. --record trade --record-markets KRW-BTC)"
        )
    from .._base.durations import parse_duration
    from .._spine.recording import record_plan

    every_ms = parse_duration(orderbook_every, "--record-orderbook-every")
    return record_plan(kinds, markets, every_ms)


@app.command(context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("markets", metavar="[MARKET...]", nargs=-1)
@_stored_db_option
@click.option(
    "--from",
    "since",
    metavar="TIME",
    required=True,
    help="Start of the replay: ISO 8601, or a duration back such as 2h.",
)
@click.option(
    "--to",
    "until",
    metavar="TIME",
    required=True,
    help="End of the replay: ISO 8601, or a duration back such as 1h.",
)
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="Times real time (10: ten times faster); 0 = as fast as the WebSocket clients read.",
)
@click.option(
    "--kinds",
    metavar="KINDS",
    default="trade,orderbook,ticker",
    show_default=True,
    help="What to play, comma separated: trade, orderbook, ticker.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=_PORT, default=8600, show_default=True, help="TCP port (0: any free).")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    metavar="NAME",
    multiple=True,
    help="A host name clients may reach the replay by, besides IP addresses and localhost.",
)
def replay(
    markets: tuple[str, ...],
    db: str | None,
    since: str,
    until: str,
    speed: float,
    kinds: str,
    host: str,
    port: int,
    allowed_hosts: tuple[str, ...],
) -> None:
    """Serve a recording (marketspine record) of MARKET... (default: every market it
    holds) from --from to --to as Upbit served it: /websocket/v1 plays it in Upbit's
    protocol, /v1/... answer as of the replay clock (candles built from the recorded
    trades up to it, the ticker and book at it), so an unmodified bot runs against
    history. The replay starts with the first subscription or /v1 request; the clock is
    in the X-Marketspine-Replay-Time header and GET /api/status. Prints 'replaying on
    http://HOST:PORT' when ready; stops on Ctrl-C or SIGTERM.

    \b
    Example:
      marketspine replay --db krw.db --from 2026-01-02T09:00 --to 2026-01-02T10:00 --speed 10
    """
    from .._base.extras import need

    need("serve")
    from .replay import run_replay_command

    run_replay_command(
        markets,
        db=db or _default_db(),
        since=since,
        until=until,
        speed=speed,
        kinds=kinds,
        host=host,
        port=port,
        allowed_hosts=allowed_hosts,
    )


@app.command("notify-test", context_settings=_CONTEXT, epilog=EXIT_CODES_HELP)
@_notify_option
def notify_test(notify: tuple[str, ...]) -> None:
    """Send one test message to each --notify URL; exit 1 when it was not delivered, 2 for
    a URL apprise cannot parse.

    \b
    Example:
      marketspine notify-test --notify tgram://BOTTOKEN/CHATID
    """
    from .._spine.notify import send_test, split_notify_urls
    from ..errors import InvalidRequestError

    urls = split_notify_urls(notify)
    if not urls:
        raise InvalidRequestError("no notify URL: give --notify URL or set MARKETSPINE_NOTIFY")
    failed = send_test(urls)
    if failed:
        _fail(
            f"the test message was not delivered to {len(failed)} of {len(urls)} notify "
            f"URL(s): {'; '.join(failed)}",
            EXIT_FAILED,
        )
    print(f"test message sent to {len(urls)} notify URL(s)")


@contextlib.contextmanager
def _simulator() -> Iterator[str]:
    """``--upstream sim``: the built-in simulator on a free loopback port, in a thread of
    this process (its own event loop; signals stay with the main server)."""
    from ..sim import SimConfig, running

    with running(SimConfig()) as url:
        yield url


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: usage errors are click's message and exit 2, bad input
    one line on stderr and exit 2, upstream failures and a database out of reach exit 1,
    Ctrl-C exit 130."""
    from ..errors import (
        InvalidRequestError,
        MarketspineError,
        MissingExtraError,
        StoreError,
        StoreUnavailableError,
    )

    # The library's warnings (a failed warmup, a 418 being waited out) go to stderr, one
    # line each; a command that sets up its own logging (serve) keeps it.
    logging.basicConfig(level=logging.WARNING, format="marketspine: %(levelname)s: %(message)s")
    try:
        code = app.main(args=argv, prog_name="marketspine", standalone_mode=False)
    except StoreUnavailableError as exc:
        # Nothing wrong with the input: the same command may succeed once the server is back.
        _fail(str(exc), EXIT_FAILED)
    except (InvalidRequestError, StoreError, MissingExtraError) as exc:
        # A missing extra is fixed by the user (pip install), like a bad value: exit 2.
        _fail(str(exc), EXIT_USAGE)
    except MarketspineError as exc:
        _fail(str(exc), EXIT_FAILED)
    except (KeyboardInterrupt, click.exceptions.Abort):
        # click turns a Ctrl-C inside a command into Abort; the bare one comes before.
        print("marketspine: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:
        # The machine refused (disk full, no permission) where no command checked first.
        _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), EXIT_FAILED)
    if isinstance(code, int) and code != EXIT_OK:
        if code == EXIT_INTERRUPTED:
            print("marketspine: interrupted", file=sys.stderr)
        raise SystemExit(code)


def _fail(message: str, code: int) -> None:
    print(f"marketspine: error: {message}", file=sys.stderr)
    raise SystemExit(code) from None
