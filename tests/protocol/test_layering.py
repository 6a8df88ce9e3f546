"""The rooms' import arrows (DESIGN.md): protocol/ imports no room above it, the plugin has no import circle.

Read from the source (every import, also those under ``TYPE_CHECKING``), so
nothing is imported or run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.processes import REPO_ROOT

ROOMS = ("plugin", "batch", "workers", "broker", "protocol")


def _imports(path: Path) -> set[str]:
    """Dotted names of the project modules (and module.attribute) that ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ROOMS}


def _modules(room: str) -> dict[str, Path]:
    return {f"{room}.{p.stem}": p for p in sorted((REPO_ROOT / room).rglob("*.py")) if p.stem != "__init__"}


def test_protocol_imports_no_room_above_it() -> None:
    offenders = {
        module: sorted(name for name in _imports(path) if name.split(".")[0] != "protocol")
        for module, path in _modules("protocol").items()
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_the_plugin_has_no_import_circle() -> None:
    modules = _modules("plugin")
    graph = {m: {n for n in _imports(p) if n in modules and n != m} for m, p in modules.items()}
    circles = []
    for start in graph:  # depth-first search for a path back to ``start``
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            for target in graph[module]:
                if target == start:
                    circles.append(" -> ".join([*path, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    assert circles == []
