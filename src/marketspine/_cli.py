"""The ``marketspine`` command line: thin calls into the library, never the reverse."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import click
import typer

DEFAULT_UPSTREAM = "https://api.upbit.com"

app = typer.Typer(
    help="Upbit market data, fetched once, kept locally, served fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def sim(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8765,
    seed: Annotated[int, typer.Option(help="Same seed, same market history.")] = 1,
    region: Annotated[str, typer.Option(help="Mimic Upbit's kr, sg, id or th site.")] = "kr",
    latency_ms: Annotated[float, typer.Option(help="Added latency per request.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Random extra latency, up to this.")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Share of requests answered 5xx.")] = 0.0,
    hang_rate: Annotated[float, typer.Option(help="Share of requests never answered.")] = 0.0,
    rate_limit: Annotated[
        int, typer.Option(help="Requests/s per group per client; 0 = none.")
    ] = 10,
    markets: Annotated[int, typer.Option(help="How many markets to list.")] = 30,
    speed: Annotated[float, typer.Option(help="Simulated time runs this many times faster.")] = 1.0,
    ws_drop_every_s: Annotated[
        float, typer.Option(help="Cut each WebSocket every N s without a close frame; 0 = never.")
    ] = 0.0,
    ws_stall_every_s: Annotated[
        float, typer.Option(help="Each WebSocket goes silent (no data, no pongs) every N s.")
    ] = 0.0,
    ws_idle_timeout_s: Annotated[
        float, typer.Option(help="Close WebSockets idle this long.")
    ] = 120.0,
) -> None:
    """Run a faithful offline Upbit (REST and WebSocket) until stopped."""
    from .sim import SimConfig, serve

    config = SimConfig(
        seed=seed,
        region=region,
        markets=markets,
        speed=speed,
        rate_limit=rate_limit,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
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


def _default_db() -> str:
    from platformdirs import user_data_dir

    return str(Path(user_data_dir("marketspine")) / "marketspine.db")


DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLite file (default: marketspine.db in the user data directory)."),
]
UpstreamOption = Annotated[
    str, typer.Option("--upstream", help="Upbit REST base URL (or a simulator's).")
]
TimeframeOption = Annotated[
    str, typer.Option("--timeframe", "-t", help="1s 1m 3m 5m 10m 15m 30m 1h 4h 1d 1w 1M 1y.")
]
SinceOption = Annotated[
    str | None,
    typer.Option("--since", help="ISO 8601 start, naive means UTC (default: 200 windows back)."),
]
UntilOption = Annotated[
    str | None, typer.Option("--until", help="ISO 8601 end, exclusive (default: now).")
]


@app.command()
def collect(
    markets: Annotated[list[str], typer.Argument(help="Market codes such as KRW-BTC.")],
    timeframe: TimeframeOption,
    since: SinceOption = None,
    until: UntilOption = None,
    db: DbOption = None,
    upstream: UpstreamOption = DEFAULT_UPSTREAM,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print a one-line JSON summary instead of a progress bar."),
    ] = False,
) -> None:
    """Backfill closed candles into the store: resumable, exact, at the rate-limit ceiling."""
    from ._commands import run_collect

    run_collect(
        markets,
        timeframe=timeframe,
        since=since,
        until=until,
        db=db or _default_db(),
        upstream=upstream,
        json_output=json_output,
    )


@app.command()
def export(
    market: Annotated[str, typer.Argument(help="Market code such as KRW-BTC.")],
    timeframe: TimeframeOption,
    out: Annotated[str, typer.Option("--out", "-o", help="File to write.")],
    export_format: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    since: SinceOption = None,
    until: UntilOption = None,
    db: DbOption = None,
) -> None:
    """Write stored candles to CSV or Parquet (time_utc,open,high,low,close,volume,value)."""
    from ._commands import run_export

    run_export(
        market,
        timeframe=timeframe,
        since=since,
        until=until,
        db=db or _default_db(),
        export_format=export_format,
        out=out,
    )


@app.command()
def status(
    db: DbOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What is stored: markets, timeframes, covered ranges, row counts."""
    from ._commands import run_status

    run_status(db=db or _default_db(), json_output=json_output)


@app.command()
def warmup(
    upstream: UpstreamOption = DEFAULT_UPSTREAM,
    exchange: Annotated[
        list[str] | None,
        typer.Option(
            "--exchange",
            help="Another exchange as NAME=URL (repeatable), e.g. upbit-sg=https://sg-api.upbit.com.",
        ),
    ] = None,
    db: DbOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Fetch market lists and instruments (tick sizes, levels) of every configured exchange."""
    from ._commands import run_warmup

    run_warmup(
        upstream=upstream, exchanges=exchange or [], db=db or _default_db(), json_output=json_output
    )


@app.command()
def serve(
    upstream: Annotated[
        str,
        typer.Option(
            "--upstream", help="Upbit REST base URL, or 'sim' for the built-in simulator."
        ),
    ] = DEFAULT_UPSTREAM,
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8600,
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            help="Bearer token of the admin API (default: $MARKETSPINE_ADMIN_TOKEN, else one "
            "generated at first start and kept beside the database).",
        ),
    ] = None,
) -> None:
    """Serve Upbit-compatible REST, its own /api, /metrics and the admin API to every client."""
    from ._serve import run_serve

    run_serve(
        upstream=upstream, db=db or _default_db(), host=host, port=port, admin_token=admin_token
    )


def main() -> None:
    """Console-script entry point: bad input is one line on stderr and exit code 2."""
    import sys

    from ._errors import InvalidRequestError, MarketspineError, StoreError

    try:
        # Outside standalone mode typer returns the exit code of a Ctrl-C (130) or a
        # typer.Exit instead of exiting: pass it on, or an interrupted run looks successful.
        code = app(standalone_mode=False)
    except (InvalidRequestError, StoreError) as exc:
        print(f"marketspine: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except MarketspineError as exc:
        print(f"marketspine: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # a Ctrl-C before typer's own handling was in place
        print("marketspine: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except click.exceptions.Abort:
        print("marketspine: aborted", file=sys.stderr)
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    if isinstance(code, int) and code != 0:
        if code == 130:
            print("marketspine: interrupted", file=sys.stderr)
        raise SystemExit(code)
