"""The package's shape, as docs/internals.rst describes it: small modules, imports that point
one way (type-checking imports included), no stub that calls up into a subclass, and no
``type: ignore`` without its reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "coroexecutor"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")
MAX_LINES = 400


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every coroexecutor module ``path`` imports, at run time or for type checking."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("coroexecutor"):
                found.add(target)
                for alias in node.names:  # `from . import _shutdown` imports a module
                    found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("coroexecutor"))
    known = {_name(p) for p in MODULES}
    return {name for name in found if name in known and name != here}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_is_under_the_size_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_LINES, f"{path.name} has {lines} lines: split it by concept"


def test_the_import_graph_has_no_cycle_type_checking_imports_included() -> None:
    # Packages import their submodules (re-exports): only module-to-module edges count.
    graph = {
        _name(p): {m for m in _imports(p) if not _name(p).startswith(m + ".")} for p in MODULES
    }
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name, [name])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_stub_calls_up_into_a_subclass(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    stubs = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise)
        and isinstance(node.exc, (ast.Name, ast.Call))
        and "NotImplementedError" in ast.dump(node.exc)
    ]
    assert not stubs, f"{path.name}: NotImplementedError stubs at lines {stubs}"


_IGNORE = re.compile(r"#\s*type:\s*ignore(\[[^\]]*\])?(?P<rest>.*)$")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_type_ignore_says_why_on_its_line(path: Path) -> None:
    bare = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = _IGNORE.search(line)
        if match and not match.group("rest").strip().startswith("#"):
            bare.append(number)
    assert not bare, f"{path.name}: type: ignore without a reason at lines {bare}"


LANE_COPY = "(part of the lane's copy)"  # marks the lane's written-out slot take and release


def test_the_slot_counts_change_only_inside_slots() -> None:
    """The invariant free + running + granted == limit has one owner: Slots. Aside: the
    plain lane, the one hot path written out twice, has Slots.take_nowait() and
    Slots.release() written out, once each, marked so (internals.rst, "The plain lane")."""
    counts = re.compile(r"\.(free|granted|waiting|queued)\s*[-+]?=[^=]")
    offenders, lane = [], []
    for p in MODULES:
        # _slot_line.py: SlotLine, the base of Slots that holds the counts; _keyed.py:
        # KeyedLine, the per-key backlog (its lines' own counts, the Line of
        # _keyed_ticket.py); _keyed_slots.py: KeyedSlots, the Slots subclass that owns it
        names = ("_slots.py", "_slot_line.py", "_keyed.py", "_keyed_ticket.py", "_keyed_slots.py")
        if p.name in names:
            continue
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if counts.search(line):
                if LANE_COPY in line and p.name in ("_executor.py", "_runners.py"):
                    lane.append(line.split("#")[0].strip())
                else:
                    offenders.append(f"{p.name}:{n}")
    assert not offenders, offenders
    assert sorted(lane) == ["exe._slots.free += 1", "slots.free -= 1"], lane
