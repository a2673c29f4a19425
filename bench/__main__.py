"""Run every benchmark module (or the ones named on the command line) and print one table
(``--markdown`` also prints it as a Markdown table, the form the README records).

Each module in this package exposes ``run() -> list[dict]`` whose rows carry
``benchmark``, ``value``, ``unit`` and ``goal``.
"""

from __future__ import annotations

import importlib
import sys
import time

from rich.console import Console
from rich.table import Table

from marketspine._budget.process import forget_process_budgets

MODULES = (
    "sim_history",
    "sim_rest",
    "client",
    "store",
    "spine",
    "calls",
    "cold",
    "memory",
    "workload",
    "serve",
    "serve_history",
    "serve_ws",
    "scale",
    "feed",
    "live_quiet",
    "record",
    "replay",
    "latency",
)


def main(argv: list[str]) -> int:
    markdown = "--markdown" in argv
    names = [a for a in argv if a != "--markdown"] or list(MODULES)
    table = Table(title="marketspine benchmarks")
    for column in ("suite", "benchmark", "value", "unit", "goal"):
        table.add_column(column, justify="right" if column == "value" else "left")
    console = Console(width=max(Console().width, 150))
    lines = ["| suite | benchmark | value | unit | goal |", "|---|---|---:|---|---|"]
    failed = []
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                console.print(f"[yellow]skipping {name}: no such benchmark module[/]")
                continue
            raise
        started = time.perf_counter()
        console.print(f"running {name} ...")
        forget_process_budgets()  # each suite starts as a process of its own would
        try:
            rows = module.run()
        except Exception as exc:  # report and go on: one broken suite must not hide the others
            failed.append(name)
            console.print(f"[red]{name} failed: {exc!r}[/]")
            continue
        for row in rows:
            value = row["value"]
            shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
            table.add_row(name, row["benchmark"], shown, row["unit"], str(row.get("goal", "")))
            lines.append(
                f"| {name} | {row['benchmark']} | {shown} | {row['unit']} | {row.get('goal', '')} |"
            )
        console.print(f"{name} took {time.perf_counter() - started:.1f} s")
    console.print(table)
    if markdown:
        print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
