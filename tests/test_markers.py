"""The marks that sort the suite, checked from the test modules' source: a test that starts a
real child process (the ``marketspine`` command, ``python -m marketspine serve``, a
``redis-server``, chromium) is marked ``process``, so ``pytest -m "not process"`` runs the
fast tier and stays that way when a test is added. (``services``, for tests that need the
machine's PostgreSQL or Redis, is set by conftest from the fixtures a test asks for.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# What starts a child process when called, by where it comes from: the suite's own helpers
# (imported by name) and the standard library's calls (as module attributes).
HELPERS = {
    "clitools": {"run", "CONSOLE_SCRIPT"},
    "serve_support": {"serve_process", "serve_processes"},
    "playwright.sync_api": {"sync_playwright"},
}
LIBRARY_CALLS = {
    "subprocess": {"Popen", "run", "call", "check_call", "check_output"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
    "os": {"fork", "system", "posix_spawn", "execv", "execvp"},
}
# Shared fixtures (conftest.py, serve/conftest.py, services.py) that start one.
FIXTURES = {"serve", "start_serve", "private_redis"}


def _test_modules() -> list[Path]:
    return [path for path in sorted(TESTS.rglob("test_*.py")) if path != Path(__file__)]


def _starters(tree: ast.Module) -> set[str]:
    """Names bound in the module that start a process when called: imported helpers."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in HELPERS:
            names |= {a.asname or a.name for a in node.names if a.name in HELPERS[node.module]}
    return names


def _starts_directly(node: ast.AST, starters: set[str]) -> bool:
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and inner.id in starters:
            return True
        if (
            isinstance(inner, ast.Attribute)
            and isinstance(inner.value, ast.Name)
            and inner.attr in LIBRARY_CALLS.get(inner.value.id, set())
        ):
            return True
    return False


def _asks(node: ast.AST, starting: set[str], fixtures: set[str]) -> bool:
    """Whether the definition calls one of ``starting`` in its body or asks for one of them
    (or of the shared ``fixtures``) as a parameter."""
    if {inner.id for inner in ast.walk(node) if isinstance(inner, ast.Name)} & starting:
        return True
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        args = node.args
        params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
        return bool(params & (starting | fixtures))
    return False


def _is_process_mark(node: ast.expr) -> bool:
    """``pytest.mark.process`` (called or not)."""
    target = node.func if isinstance(node, ast.Call) else node
    return ast.unparse(target) == "pytest.mark.process"


def _marked_module(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            value = node.value
            marks = value.elts if isinstance(value, ast.List | ast.Tuple) else [value]
            return any(_is_process_mark(mark) for mark in marks)
    return False


def unmarked_process_tests(source: str) -> list[str]:
    """Tests in the module's source that start a process, directly or through the module's
    own functions, classes and fixtures, and are not marked ``process``."""
    tree = ast.parse(source)
    if _marked_module(tree):
        return []
    starters = _starters(tree)
    definitions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    starting = {name for name, node in definitions.items() if _starts_directly(node, starters)}
    fixtures = FIXTURES - set(definitions)  # unless the module defines its own of that name
    while True:  # what calls (or asks for) something that starts a process starts one too
        more = {
            name
            for name, node in definitions.items()
            if name not in starting and _asks(node, starting, fixtures)
        }
        if not more:
            break
        starting |= more
    tests: list[tuple[str, ast.AST, list[ast.expr]]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            tests.append((node.name, node, node.decorator_list))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for method in node.body:
                if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
                    marks = [*node.decorator_list, *method.decorator_list]
                    tests.append((f"{node.name}.{method.name}", method, marks))
    return [
        name
        for name, node, marks in tests
        if name.split(".")[-1].startswith("test")
        and (_starts_directly(node, starters) or _asks(node, starting, fixtures))
        and not any(_is_process_mark(mark) for mark in marks)
    ]


@pytest.mark.parametrize("path", _test_modules(), ids=lambda p: str(p.relative_to(TESTS)))
def test_a_test_that_starts_a_process_is_marked_process(path: Path) -> None:
    assert unmarked_process_tests(path.read_text()) == [], (
        f"{path.relative_to(TESTS)}: mark these pytest.mark.process "
        "(or the module: pytestmark = [pytest.mark.process, ...])"
    )


def test_the_check_sees_a_process_started_through_the_modules_own_helpers() -> None:
    """Not vacuous: what starts a process through a fixture, a helper function, a class or
    a shared fixture is found; a mark on the test or the module satisfies it."""
    source = """
import subprocess
import pytest
from clitools import run as run_cli

class Collector:
    def start(self): return subprocess.Popen(["marketspine"])

def helper(): return run_cli("status")

@pytest.fixture
def collector(): return Collector()

def test_fixture(collector): pass
def test_helper(): helper()
def test_shared_fixture(serve): pass
async def test_direct(): subprocess.run(["python"])
def test_in_process(): assert 1
@pytest.mark.process
def test_marked(): helper()
"""
    assert unmarked_process_tests(source) == [
        "test_fixture",
        "test_helper",
        "test_shared_fixture",
        "test_direct",
    ]
    marked = "pytestmark = [pytest.mark.timeout(60), pytest.mark.process]\n" + source
    assert unmarked_process_tests(marked) == []
