"""The package's modules import each other without a cycle.

Each module of :mod:`flask_relay_session` has one responsibility, and the
imports between them go one way: a cycle would mean two modules that
cannot be read, or changed, one without the other. The graph has the
imports a module runs when it is imported: those under ``if
t.TYPE_CHECKING:`` are for annotations only, and those inside a function
run when it is called (the CLI imports the migration package so). A
package (its ``__init__``) is a module of the graph like the others, for
what it imports; that Python runs a package's ``__init__`` before any of
its modules is no edge, or every package that re-exports its modules would
be a cycle.
"""

from __future__ import annotations

import ast
import pathlib

import flask_relay_session

PACKAGE = pathlib.Path(flask_relay_session.__file__).parent

#: Module name -> the package's modules it imports when it is imported.
Graph = dict[str, set[str]]


def module_names() -> dict[str, pathlib.Path]:
    """Every module of the package by name, packages included."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def run_time_imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports when it is
    imported (the statements of its body, outside ``TYPE_CHECKING``).
    """
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(statement.test):
                    visit(statement.body)
                visit(statement.orelse)
            elif isinstance(statement, ast.Try):
                visit(statement.body)
                for handler in statement.handlers:
                    visit(handler.body)
                visit(statement.orelse)
                visit(statement.finalbody)
            elif isinstance(statement, ast.ImportFrom):
                base = statement.module or ""
                if statement.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - statement.level + 1]
                    base = ".".join([*parts, *([base] if base else [])])
                for alias in statement.names:
                    # "from . import events" imports the module events.
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in known else base)
            elif isinstance(statement, ast.Import):
                found.update(alias.name for alias in statement.names)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {module for module in found & known if module != name}


def import_graph() -> Graph:
    names = module_names()
    return {
        name: run_time_imports(name, path, set(names))
        for name, path in sorted(names.items())
    }


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle of ``graph`` as the modules along it, or ``None``."""
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            cycle = walk(imported, [*path, name])
            if cycle is not None:
                return cycle
        done.add(name)
        return None

    for name in graph:
        cycle = walk(name, [])
        if cycle is not None:
            return cycle
    return None


def test_the_packages_modules_import_each_other_without_a_cycle() -> None:
    graph = import_graph()
    assert "flask_relay_session.session" in graph
    assert (
        "flask_relay_session.stores.layouts"
        in graph["flask_relay_session.stores.redis"]
    )
    assert find_cycle(graph) is None


def test_layouts_do_no_io() -> None:
    """The layouts format data; every Redis call is the Redis store's."""
    graph = import_graph()
    assert not graph["flask_relay_session.stores.layouts"] & {
        "flask_relay_session.stores.redis",
        "flask_relay_session.stores.wire",
    }


def test_the_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
