"""The package's shape, checked from its source: every module small enough to read, no
module reaching for another's private names, and an import graph without cycles (so the
modules stack in floors, each importing only from below)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "marketspine"
MAX_LINES = 500


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name (relative to the package) -> file, sim/ included."""
    return {
        ".".join(path.relative_to(root).with_suffix("").parts): path
        for path in sorted(root.rglob("*.py"))
    }


@functools.cache
def imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for each package-relative import of the
    module ``name``, including imports inside functions."""
    package = name.split(".")[:-1]  # sim._ws and sim.__init__ both live in sim
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package[: len(package) - (node.level - 1)]
            if node.module is None:  # "from . import x": x is a module
                for alias in node.names:
                    found.append((".".join([*base, alias.name]), [], node.lineno))
            else:
                target = ".".join([*base, *node.module.split(".")])
                found.append((target, [a.name for a in node.names], node.lineno))
    return found


ALL = modules(PACKAGE)


@pytest.mark.parametrize("name", [n for n in ALL if not n.startswith("sim.")])
def test_no_module_is_over_500_lines(name: str) -> None:
    lines = len(ALL[name].read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"{name}.py has {lines} lines: cut it at a seam (at most {MAX_LINES})"
    )


def test_no_module_imports_a_private_name_of_another() -> None:
    private = [
        f"{name}.py:{line} takes {taken} from {target}"
        for name, path in ALL.items()
        if not name.startswith("sim.")
        for target, names, line in imports(name, path)
        for taken in names
        if taken.startswith("_")
    ]
    assert private == [], "make the name public in its module instead:\n" + "\n".join(private)


def test_the_import_graph_has_no_cycle() -> None:
    graph = {
        name: {target.removesuffix(".__init__") for target, _, _ in imports(name, path)}
        for name, path in ALL.items()
        if not name.endswith("__init__")  # the package's lazy index of public names
    }
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = " -> ".join([*trail[trail.index(name) :], name])
            raise AssertionError(f"import cycle: {cycle}")
        if name in done or name not in graph:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_library_never_imports_the_simulator() -> None:
    # The simulator is the shared test double: only the demo and the service start one.
    top = {"demo", "_demo_serve", "__main__", "_cli", "_commands"}
    wrong = [
        f"{name}.py:{line} imports {target}"
        for name, path in ALL.items()
        if not name.startswith("sim") and name not in top and not name.startswith("_serve")
        for target, _, line in imports(name, path)
        if target == "sim" or target.startswith("sim.")
    ]
    assert wrong == []


def test_no_module_uses_asyncio_wait_for() -> None:
    # On Python 3.11 asyncio.wait_for swallows a cancel that lands as the awaited thing
    # finishes (it returns the result): a background loop then never ends and a close hangs
    # (the page-lease renewer did). ``async with asyncio.timeout(...)`` cancels the task itself.
    found = [
        f"{name}.py:{node.lineno}"
        for name, path in ALL.items()
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute) and node.attr == "wait_for"
        and isinstance(node.value, ast.Name) and node.value.id == "asyncio"
    ]  # fmt: skip
    assert found == [], "use `async with asyncio.timeout(...)` instead:\n" + "\n".join(found)
