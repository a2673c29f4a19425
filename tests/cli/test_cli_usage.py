"""Usage errors are click's usual message and exit 2, never a traceback; --version works;
every command's help has text and an example, shows flags as flags and arguments by name.
In-process (``run_in_process``) but for --version, which runs the installed console script."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
from clitools import COMMANDS, run, run_in_process


def listed_commands() -> list[str]:
    """The commands ``marketspine --help`` lists (so a new command is checked too)."""
    shown = run_in_process("--help")
    assert shown.returncode == 0, shown.stderr
    section = shown.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    return [
        line.split()[0] for line in section.splitlines() if line.startswith("  ") and line[2] != " "
    ]


def test_the_listed_commands_are_the_known_ones() -> None:
    assert set(COMMANDS) <= set(listed_commands())


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ([], "Usage: marketspine [OPTIONS] COMMAND"),
        (["bogus"], "No such command 'bogus'"),
        (["--bogus"], "No such option '--bogus'"),
        (["status", "--bogus"], "No such option '--bogus'"),
        (["status", "extra"], "Got unexpected extra argument (extra)"),
        (["collect"], "Missing argument 'MARKET...'"),
        (["collect", "KRW-BTC"], "Missing option '--timeframe'"),
        (["export", "KRW-BTC", "-t", "1m"], "Missing option '--out'"),
        (["export", "-t", "1m", "--out", "x.csv"], "Missing argument 'MARKET'"),
        (["collect", "KRW-BTC", "-t"], "Option '-t' requires an argument"),
        (["sim", "--port", "eighty"], "'eighty' is not a valid integer"),
        (["warmup", "--json=yes"], "Option '--json' does not take a value"),
    ],
)
def test_usage_errors_are_clicks_message_and_exit_2(args: list[str], complaint: str) -> None:
    done = run_in_process(*args)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert complaint in done.stderr
    assert "Error: " in done.stderr or "Usage: marketspine" in done.stderr


@pytest.mark.process
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_version(flag: str) -> None:
    done = run(flag)  # the console script pip installed, and its package's metadata
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"marketspine, version {version('marketspine')}"


@pytest.mark.parametrize("command", listed_commands())
def test_every_command_has_help_with_an_example(command: str) -> None:
    done = run_in_process(command, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    usage, _, rest = text.partition("\n\n")
    description = rest.split("Options:", 1)[0]
    assert len(description.split()) >= 5, f"{command} has no help text"
    example = re.search(r"Example:\n +(marketspine .+)", text)
    assert example and example.group(1).startswith(f"marketspine {command}"), text
    assert "Exit codes:" in text
    # No type placeholders of the <bool> kind, no {name} arguments.
    assert not re.search(r"<\w+>", text) and "{" not in usage, text


@pytest.mark.parametrize("command", listed_commands())
def test_flags_show_as_flags_and_arguments_by_name(command: str) -> None:
    import click

    from marketspine._cli.main import app

    shown = run_in_process(command, "--help").stdout
    cmd = app.commands[command]
    for param in cmd.params:
        if isinstance(param, click.Option) and param.is_flag:
            name = max(param.opts, key=len)
            # the flag's own line: the name, then only spaces before its help text
            line = rf"^ +(-\w, )?{re.escape(name)}( {{2,}}\S|$)"
            assert re.search(line, shown, re.M), (name, shown)
        elif isinstance(param, click.Argument):
            assert param.human_readable_name.isupper(), param.human_readable_name
            assert param.human_readable_name in shown.splitlines()[0]


@pytest.mark.parametrize("command", listed_commands())
def test_the_flags_a_help_names_are_the_commands_own(command: str) -> None:
    """A shared option's help must not send a newcomer to a flag the command lacks (the
    readers' --db once said "any other --upstream" where they take none)."""
    from marketspine._cli.main import app

    shown = run_in_process(command, "--help").stdout
    own = {opt for param in app.commands[command].params for opt in param.opts} | {"--help"}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", shown))
    assert named <= own, sorted(named - own)


def test_top_level_help_documents_exit_codes() -> None:
    shown = run_in_process("--help").stdout
    for code in ("0 done", "1 upstream", "2 bad input", "3 nothing to export", "130 interrupted"):
        assert code in shown
