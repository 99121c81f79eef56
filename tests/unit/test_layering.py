"""The floors: imports point down (streams < features < models < serving < infra), and no circles.

Every module's imports are read from its source (module level and inside functions alike, since
an import inside a function is still a dependency), resolved to the Warden module they name, and
checked against the floor of the importer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The floors, lowest first.
FLOORS = ("streams", "features", "models", "serving", "infra")
#: Imports allowed to point up, each with why: ``(importer, imported) -> reason``.
UPWARD_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("warden.streams.sources.corpus", "warden.features.ingest.text"): (
        "the corpus source fills each replayed mail's `urls` as a sending client would, with the URL "
        "parser ingest's content features use: a second parser on the ground floor could drift from it. "
        "features.ingest.text imports nothing of Warden, so the edge closes no circle."
    ),
}


def _modules() -> dict[str, Path]:
    """Every module of the five floors by its installed name (``warden.streams.records``)."""
    found = {}
    for folder in FLOORS:
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(("warden", *parts))] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The Warden module that an imported name lives in (a module, or a name inside one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported(name: str, path: Path) -> Iterator[str]:
    """The Warden modules one module imports, wherever in the module the import statement is."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            owner = _owner(target)
            if owner is not None and owner != name:
                yield owner


GRAPH = {name: set(_imported(name, path)) for name, path in MODULES.items()}


def _floor(name: str) -> int:
    return FLOORS.index(name.split(".")[1])


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
    return circles


def test_the_walk_sees_every_floor_and_function_level_imports(tmp_path: Path) -> None:
    # The walk itself must work: every floor has modules, and an import inside a function counts.
    assert {name.split(".")[1] for name in MODULES} == set(FLOORS)
    assert sum(len(imports) for imports in GRAPH.values()) > 300
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def late():\n"
        "    from warden.streams.records import MailEvent\n"
        "    from . import topics\n"
        "    import warden.features.store\n"
        "    return MailEvent, topics, warden\n"
    )
    assert set(_imported("warden.streams.probe", probe)) == {
        "warden.streams.records",
        "warden.streams.topics",
        "warden.features.store",
    }


def test_imports_point_down_the_floors() -> None:
    upward = sorted(
        f"{importer} imports {imported}"
        for importer, imports in GRAPH.items()
        for imported in imports
        if _floor(imported) > _floor(importer) and (importer, imported) not in UPWARD_EXCEPTIONS
    )
    assert upward == [], "an import points up a floor: move the code down, or list it with its reason"


def test_every_listed_exception_is_still_needed() -> None:
    stale = [pair for pair in UPWARD_EXCEPTIONS if pair[1] not in GRAPH.get(pair[0], set())]
    assert stale == []


def test_no_module_imports_itself_through_others() -> None:
    assert _circles(GRAPH) == []


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _circles(graph) == [["a", "b", "c"]]


def _bare(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and (node.module or "").split(".")[0] in FLOORS
    return isinstance(node, ast.Import) and any(alias.name.split(".")[0] in FLOORS for alias in node.names)


def test_no_bare_floor_names_are_imported() -> None:
    # The lint rule (ruff TID251) refuses them too; a bare name would load a second copy of a module.
    bare = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in [*MODULES.values(), *(REPO / "tests").rglob("*.py")]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if _bare(node)
    ]
    assert bare == []
