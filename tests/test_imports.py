"""The import graph: no module of the inference library imports one that imports it
back, lazy imports (inside functions) included."""

from __future__ import annotations

import ast
from pathlib import Path

import lmtool

ROOT = Path(lmtool.__file__).parent


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the lmtool modules it imports anywhere in its text."""
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:  # `from pkg import module` names a module
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]], prefix: str) -> list[list[str]]:
    """Every module under `prefix` that can reach itself again, with the way back."""
    found = []
    for start in sorted(m for m in graph if m.startswith(prefix)):
        paths = [[start]]
        seen = set()
        while paths:  # breadth first: the shortest way back
            path = paths.pop(0)
            for nxt in sorted(graph[path[-1]]):
                if nxt == start:
                    found.append([*path, start])
                    paths = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    paths.append([*path, nxt])
    return found


def test_the_inference_modules_import_no_cycle():
    assert cycles(import_graph(ROOT), "lmtool.inference.") == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}
    assert cycles(graph, "a.x") == [["a.x", "a.y", "a.z", "a.x"]]
    assert cycles(graph, "a.w") == []
