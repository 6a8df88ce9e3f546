"""The rooms' import arrows, held to one table of allowed edges (protocol/README.md, plugin/README.md).

Read from the source (every import, also those under ``TYPE_CHECKING`` and inside
functions), so nothing is imported or run. A *room* is a top-level package, or a
sub-package of ``protocol`` or ``plugin`` (the plugin's top-level modules form the
room ``plugin``). Besides the table: no import circle between rooms or between
modules, and no module outside ``tests/`` imports ``tests/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.processes import REPO_ROOT

TOP_ROOMS = ("plugin", "batch", "workers", "broker", "protocol", "bench", "scripts", "tests")
SUB_ROOMS = {
    "protocol": ("wire", "runtime", "ops", "geometry", "formats"),
    "plugin": ("_qt", "labels", "view", "connection", "jobs"),
}

# room -> the rooms it may import besides itself. Lower rooms first; an edge that is not here
# fails the test, so a new arrow is a decision made in this table (and the rooms' READMEs).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),  # the package's __init__
    "protocol.runtime": set(),
    "protocol.geometry": set(),
    "protocol.wire": {"protocol.runtime"},
    "protocol.formats": {"protocol.runtime"},
    "protocol.ops": {"protocol.wire", "protocol.geometry", "protocol.runtime"},
    "broker": {"protocol.wire", "protocol.runtime"},
    "workers": {"protocol.wire", "protocol.runtime"},
    "batch": {"protocol.wire", "protocol.runtime", "protocol.ops", "protocol.geometry", "protocol.formats"},
    # the plugin: label bookkeeping < napari glue < plugin-wide modules < connection < jobs < widgets
    "plugin.labels": {"protocol.runtime"},
    "plugin.view": {"plugin.labels", "protocol.wire", "protocol.ops", "protocol.geometry"},
    "plugin": {"plugin.labels", "plugin.view", "protocol.formats", "protocol.runtime"},
    "plugin.connection": {"plugin", "protocol.wire", "protocol.runtime"},
    "plugin.jobs": {
        "plugin",
        "plugin.connection",
        "plugin.labels",
        "plugin.view",
        "protocol.wire",
        "protocol.ops",
        "protocol.formats",
        "protocol.geometry",
        "protocol.runtime",
    },
    "plugin._qt": {
        "plugin",
        "plugin.connection",
        "plugin.jobs",
        "plugin.labels",
        "plugin.view",
        "protocol.wire",
        "protocol.ops",
        "protocol.formats",
        "protocol.geometry",
        "protocol.runtime",
    },
}
# Tools may use any project room, never tests/ (whatever they need from there belongs in a room).
TOOLS = ("bench", "scripts")


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in SUB_ROOMS.get(parts[0], ()):
        return ".".join(parts[:2])
    return parts[0]


def _imports(path: Path) -> set[str]:
    """Dotted names of the project modules (and module.attribute) that ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in TOP_ROOMS}


def _modules(top: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module under ``top`` (subpackages and ``__init__`` too)."""
    modules = {}
    for path in sorted((REPO_ROOT / top).rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _project_modules() -> dict[str, Path]:
    return {m: p for top in TOP_ROOMS for m, p in _modules(top).items()}


def _module_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (``from a import b`` counts ``a.b`` when it is a module)."""
    modules = _project_modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in _imports(path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _circles(graph: dict[str, set[str]]) -> list[str]:
    circles = []
    for start in graph:  # depth-first search for a path back to ``start``
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for target in graph.get(node, ()):
                if target == start:
                    circles.append(" -> ".join([*path, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    return circles


def test_every_room_imports_only_what_its_row_allows() -> None:
    offenders = {}
    for module, targets in _module_graph().items():
        room = room_of(module)
        if room in TOOLS or room == "tests":
            continue
        assert room in ALLOWED, f"{module} is in room {room!r}, which has no row in ALLOWED"
        bad = sorted(t for t in targets if room_of(t) not in {room, *ALLOWED[room]})
        if bad:
            offenders[module] = bad
    assert offenders == {}


def test_nothing_outside_tests_imports_tests() -> None:
    offenders = {
        module: sorted(t for t in targets if room_of(t) == "tests")
        for module, targets in _module_graph().items()
        if room_of(module) != "tests"
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_allowed_table_has_no_circle_between_rooms() -> None:
    assert _circles({room: set(targets) for room, targets in ALLOWED.items()}) == []


def test_no_module_import_circle() -> None:
    graph = _module_graph()
    assert _circles({m: t for m, t in graph.items() if room_of(m) != "tests"}) == []


def _members(node: ast.ClassDef) -> set[str]:
    """Methods, class-level annotations and attributes set on ``self`` anywhere in the class."""
    names = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    names |= {
        n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
    for sub in ast.walk(node):
        targets = (
            sub.targets
            if isinstance(sub, ast.Assign)
            else [sub.target]
            if isinstance(sub, ast.AnnAssign)
            else []
        )
        names |= {
            t.attr
            for t in targets
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
        }
    return names - {"__init__"}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    stack, seen = [start], {start}
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for target in graph.get(node, ()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return False


def test_no_call_back_circle_through_a_protocol() -> None:
    """A ``typing.Protocol`` that a class of an importing module implements is an import circle in
    disguise (``StackHost`` was one: stack jobs called back into the controller that owned them)."""
    graph = _module_graph()
    protocols, classes = [], []
    for module, path in _project_modules().items():
        if room_of(module) in {"tests", *TOOLS}:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                is_protocol = any(getattr(b, "id", getattr(b, "attr", "")) == "Protocol" for b in node.bases)
                (protocols if is_protocol else classes).append((module, node.name, _members(node)))
    offenders = [
        f"{impl_module}.{impl} implements {module}.{name}, which it imports"
        for module, name, members in protocols
        for impl_module, impl, impl_members in classes
        if len(members) > 1
        and members <= impl_members
        and impl_module != module
        and _reaches(graph, impl_module, module)
    ]
    assert offenders == []


def test_every_room_is_read() -> None:
    """The checks above can fail: each room has modules, and batch/ imports protocol/ (it is not blind)."""
    modules = _project_modules()
    for room in ALLOWED:
        assert any(room_of(m) == room for m in modules), room
    assert any(
        room_of(t).startswith("protocol.")
        for m, ts in _module_graph().items()
        if m.startswith("batch")
        for t in ts
    )
    assert _circles({"a": {"b"}, "b": {"a"}}) == ["a -> b -> a", "b -> a -> b"]
