"""The library's import graph: layered, without circles, and blind to the supervisor.

Every ``import`` statement of every ``redflow_mp`` module counts, wherever it
stands: at the top, inside a function (a lazy import) or under
``if TYPE_CHECKING:``. A circle hidden by one of those is still a circle: two
modules that need each other are one room with two doors.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "redflow_mp"
PACKAGE = "redflow_mp"


def _module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module name ``path`` imports (absolute), relative imports resolved."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from . import codec`` names a module, not an attribute.
            for alias in node.names:
                found.add(f"{target}.{alias.name}")
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in LIBRARY.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(path):
            # Importing ``redflow_mp.x.y`` also runs ``redflow_mp.x``; keep the
            # deepest name that is a module of the library.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target != PACKAGE:
                edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The scanner itself: lazy, TYPE_CHECKING and ``from . import x`` imports count."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import a\n"
        "if TYPE_CHECKING:\n    from .b import B\n"
        "def f():\n    from .c import g\n"
    )
    (pkg / "m.py").write_text(source)
    assert {"pkg.a", "pkg.b", "pkg.c"} <= _imports(pkg / "m.py", tmp_path)


def test_a_circle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_circles_among_library_modules() -> None:
    graph = _graph()
    assert len(graph) > 20, sorted(graph)  # the scan found the library
    assert _cycles(graph) == []


def test_the_library_never_imports_the_supervisor() -> None:
    offenders = {
        _module_name(path): sorted(t for t in _imports(path) if t.startswith("redflow_supervisor"))
        for path in LIBRARY.rglob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
