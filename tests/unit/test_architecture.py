"""The architecture, read statically with `ast` from every module of `search/` and `service/`:
no import cycles, nothing the API reaches imports Keras or TensorFlow, no module over 400 lines.

Every import statement counts wherever it sits (module level, function bodies, TYPE_CHECKING
blocks), relative imports resolved, so a lazy import cannot hide an edge. `test_imports.py`
checks the same boundaries at run time.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("search", "service")
API = "service.app"
HEAVY = frozenset({"keras", "tensorflow"})
MAX_LINES = 400


@dataclass
class ModuleGraph:
    """Our modules: whom each imports (ours), which outside packages, and its length."""

    imports: dict[str, set[str]] = field(default_factory=dict)
    external: dict[str, set[str]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def loads(self, name: str) -> list[str]:
        """What importing `name` runs: its own imports and its parent packages' `__init__`."""
        parents = [p for p in _parents(name) if p in self.imports]
        return sorted(self.imports[name]) + parents


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The module a `from ... import` names, relative dots resolved against `name`."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if is_package else name.split(".")[:-1]
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def _targets(
    node: ast.Import | ast.ImportFrom, name: str, is_package: bool, ours: set[str]
) -> set[str]:
    """What one import statement loads: `from a import b` is `a.b` if that is one of our
    modules, else `a` (b is a name defined there)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = _absolute(node, name, is_package)
    submodules = {f"{base}.{alias.name}" for alias in node.names} & ours
    return submodules if len(submodules) == len(node.names) else {base, *submodules}


@cache
def module_graph() -> ModuleGraph:
    """Parse every module of PACKAGES once into one graph."""
    paths = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    ours, graph = set(paths), ModuleGraph()
    for name, path in paths.items():
        text = path.read_text(encoding="utf-8")
        graph.lines[name] = len(text.splitlines())
        loaded: set[str] = set()
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                loaded |= _targets(node, name, path.name == "__init__.py", ours)
        graph.imports[name] = {m for m in loaded if m in ours and m != name}
        graph.external[name] = {m.split(".")[0] for m in loaded} - set(PACKAGES)
    return graph


def _cycles(graph: ModuleGraph) -> list[list[str]]:
    """One cycle per back edge of a depth-first walk, as the chain of modules that closes it."""
    found: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = "open"
        path.append(name)
        for target in sorted(graph.imports[name]):
            if state.get(target) == "open":
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = "done"

    for name in sorted(graph.imports):
        if name not in state:
            visit(name)
    return found


def _closure(graph: ModuleGraph, start: str) -> dict[str, str | None]:
    """Every module `start` loads, each with the module that first led to it (None for start)."""
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        name = queue.popleft()
        for target in graph.loads(name):
            if target not in came_from:
                came_from[target] = name
                queue.append(target)
    return came_from


def _chain(came_from: dict[str, str | None], name: str) -> list[str]:
    chain = [name]
    while (previous := came_from[chain[-1]]) is not None:
        chain.append(previous)
    return chain[::-1]


def test_no_import_cycles() -> None:
    cycles = [" -> ".join(cycle) for cycle in _cycles(module_graph())]
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(cycles)


def test_the_api_never_reaches_keras_or_tensorflow() -> None:
    graph = module_graph()
    came_from = _closure(graph, API)
    assert {"service.routes", "search.store", "search.spec"} <= set(came_from)  # it walked
    offenders = [
        " -> ".join(_chain(came_from, name)) + f" imports {', '.join(sorted(heavy))}"
        for name in sorted(came_from)
        if (heavy := graph.external[name] & HEAVY)
    ]
    assert not offenders, f"{API}'s imports reach Keras/TensorFlow:\n" + "\n".join(offenders)


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, n in sorted(module_graph().lines.items()) if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"
