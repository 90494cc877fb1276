"""The shape of the code: no import circles, commands on the top floor, training and evaluation apart.

Every ``maskwatch`` import counts, function-level ones too (they are how circles used to be dodged).
A package importing its own modules (``__init__`` re-exports) is not a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def import_graph() -> dict[str, set[str]]:
    files = {}
    for path in (SRC / "maskwatch").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def known(name: str) -> str:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {module: set() for module in files}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("maskwatch"):
                targets = [known(f"{node.module}.{alias.name}") or known(node.module) for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names if alias.name.startswith("maskwatch")]
            else:
                continue
            graph[module].update(t for t in targets if t and t != module and not related(module, t))
    return graph


def related(a: str, b: str) -> bool:
    return a.startswith(b + ".") or b.startswith(a + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_only_commands_import_commands_and_training_never_imports_evaluation() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        if not module.startswith("maskwatch.cli"):
            assert not any(t.startswith("maskwatch.cli") for t in targets), module
        if module.startswith("maskwatch.training"):
            assert not any(t.startswith("maskwatch.evaluation") for t in targets), module


def test_the_circle_finder_finds_circles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_video_package_exports_what_it_lists() -> None:
    """maskwatch.video loads its names on first use; the list, the map and the names a type checker sees
    (its TYPE_CHECKING imports) must agree."""
    import maskwatch.video as video

    assert sorted(video.__all__) == sorted(video._EXPORTS)
    source = Path(video.__file__).read_text(encoding="utf-8")
    for name in video.__all__:
        obj = getattr(video, name)
        assert obj.__module__ == video._EXPORTS[name], name
        assert f"from {video._EXPORTS[name]} import" in source and name in source, name
