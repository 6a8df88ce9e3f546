"""The rooms' import arrows (DESIGN.md): protocol/ imports no room above it; batch/, workers/ and
broker/ import only protocol/ and themselves; the plugin imports neither workers nor broker; the
plugin has no import circle.

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
    """Dotted module name -> file, for every module of ``room`` (subpackages and ``__init__`` too)."""
    modules = {}
    for path in sorted((REPO_ROOT / room).rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_protocol_imports_no_room_above_it() -> None:
    offenders = {
        module: sorted(name for name in _imports(path) if name.split(".")[0] != "protocol")
        for module, path in _modules("protocol").items()
    }
    assert {m: names for m, names in offenders.items() if names} == {}


# What each room may import besides protocol/ and itself (DESIGN.md, "The picture"). The plugin's
# embedded backend (plugin/backend.py) starts the broker and a worker as subprocesses
# (``python -m broker``, ``python -m workers``) and imports neither, so no exception is needed.
ALLOWED: dict[str, set[str]] = {"batch": set(), "workers": set(), "broker": set(), "plugin": set()}


def test_rooms_import_only_protocol_and_themselves() -> None:
    offenders = {
        module: sorted(
            name for name in _imports(path) if name.split(".")[0] not in {"protocol", room, *ALLOWED[room]}
        )
        for room in ALLOWED
        for module, path in _modules(room).items()
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_every_room_is_read() -> None:
    """The check above can fail: each room has modules, and batch/ imports protocol/ (it is not blind)."""
    for room in ROOMS:
        assert _modules(room), room
    assert any(n.startswith("protocol.") for p in _modules("batch").values() for n in _imports(p))


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
