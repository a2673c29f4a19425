"""The package's shape, checked from its source: subpackages stacked in layers that import only
downward, an import graph without cycles, no module reaching for another's private names, the
simulator started only by the command line, and every background task owned by something that
ends it. These are rules about concepts, not sizes: a module is as long as its concept needs."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "marketspine"

# Bottom to top: a module may import from its own layer and the layers before it. The public
# face (errors, records) is the floor; __init__ and __main__ sit on top of everything.
LAYERS = [
    "errors",
    "records",
    "_base",
    "_upbit",
    "_budget",
    "_client",
    "_store",
    "_live",
    "_spine",
    "_serve",
    "sim",
    "_cli",
    "__init__",
    "__main__",
]
# The top folder holds only the public face; everything else lives in a subpackage.
PUBLIC_FACE = {"__init__", "__main__", "errors", "records"}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name (relative to the package) -> file, every subpackage included."""
    return {
        ".".join(path.relative_to(root).with_suffix("").parts): path
        for path in sorted(root.rglob("*.py"))
    }


@functools.cache
def imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for each package-relative import of the
    module ``name``, including imports inside functions."""
    package = name.split(".")[:-1]  # _live.stream and _live.__init__ both live in _live
    found: list[tuple[str, list[str], int]] = []
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


def layer(name: str) -> int:
    return LAYERS.index(name.split(".")[0])


ALL = modules(PACKAGE)


def test_the_top_folder_holds_only_the_public_face() -> None:
    top = {name for name in ALL if "." not in name}
    assert top == PUBLIC_FACE, f"move {sorted(top - PUBLIC_FACE)} into the subpackage of its layer"
    assert (PACKAGE / "py.typed").exists()


@pytest.mark.parametrize("package", [p for p in LAYERS if (PACKAGE / p).is_dir()])
def test_every_subpackage_says_what_it_holds_and_may_import(package: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc, f"{package}/__init__.py needs a docstring: what it holds, what it may import"
    if package != "sim":
        assert "May import" in doc, f"{package}/__init__.py does not say what it may import"


def test_every_module_belongs_to_a_layer() -> None:
    assert [name for name in ALL if name.split(".")[0] not in LAYERS] == []


def test_layers_import_only_downward() -> None:
    upward = [
        f"{name}.py:{line} imports {target}"
        for name, path in ALL.items()
        if name not in ("__init__", "__main__")  # the lazy index of public names
        for target, _, line in imports(name, path)
        if layer(target) > layer(name)
    ]
    assert upward == [], "a layer may import only from the layers below it:\n" + "\n".join(upward)


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


def test_only_the_command_line_starts_the_simulator() -> None:
    # The simulator is the shared test double: the command line (`sim`, `serve --upstream
    # sim`) and the demo start one; the library and serve never import it.
    wrong = [
        f"{name}.py:{line} imports {target}"
        for name, path in ALL.items()
        if not name.startswith(("sim", "_cli."))
        for target, _, line in imports(name, path)
        if target == "sim" or target.startswith("sim.")
    ]
    assert wrong == []


def test_the_protocol_has_one_home_outside_the_simulator() -> None:
    # Serve and the simulator both speak Upbit: they take its formats from _upbit, and nothing
    # outside sim reaches into the simulator's private modules for them.
    wrong = [
        f"{name}.py:{line} imports {target}"
        for name, path in ALL.items()
        if not name.startswith("sim")
        for target, _, line in imports(name, path)
        if target.startswith("sim._")
    ]
    assert wrong == []


def _calls(tree: ast.AST, attr: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == attr
    ]


def test_every_background_task_is_owned() -> None:
    # A task nobody holds is garbage-collected mid-run or outlives its owner's close. Tasks
    # are made in a TaskGroup (`group.create_task`), or by an owner that keeps each one and
    # cancels it on close (listed here), or raced and awaited in the same function
    # (`ensure_future` beside `asyncio.wait`).
    owners = {
        "_serve.ws_hub": "one failing feed must not end the others; aclose cancels each",
        "_budget.redis": "the pending-moves push and the heartbeat, kept and cancelled on close",
    }
    loose = []
    for name, path in ALL.items():
        source = path.read_text()
        tree = ast.parse(source, str(path))
        for call in _calls(tree, "create_task"):
            # The module's tasks are made in a group it opens itself.
            in_group = ast.unparse(call.func) != "asyncio.create_task" and (
                "asyncio.TaskGroup()" in source
            )
            if not in_group and name not in owners:
                loose.append(f"{name}.py:{call.lineno} {ast.unparse(call.func)}")
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            waits = any(ast.unparse(c.func) == "asyncio.wait" for c in _calls(func, "wait"))
            for call in _calls(func, "ensure_future"):
                if not waits:
                    loose.append(f"{name}.py:{call.lineno} ensure_future without asyncio.wait")
    assert loose == [], "give each task an owner (a TaskGroup):\n" + "\n".join(loose)


def test_no_module_uses_asyncio_wait_for() -> None:
    # On Python 3.11 asyncio.wait_for swallows a cancel that lands as the awaited thing
    # finishes (it returns the result): a background loop then never ends and a close hangs
    # (the page-lease renewer did). ``async with asyncio.timeout(...)`` cancels the task itself.
    found = [
        f"{name}.py:{node.lineno}"
        for name, path in ALL.items()
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute)
        and node.attr == "wait_for"
        and isinstance(node.value, ast.Name)
        and node.value.id == "asyncio"
    ]
    assert found == [], "use `async with asyncio.timeout(...)` instead:\n" + "\n".join(found)
