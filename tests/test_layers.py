"""The package's layers import downwards only (DESIGN.md): schedule < runtime < models < quality <
search < bench < cli, and the runtime stays free of the search's dependencies; and no two modules
import each other, directly or round a longer loop. Every import counts, including those inside
functions (an import on use that closes a circle is still a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "zeustune"
LAYERS = ["schedule", "runtime", "models", "quality", "search", "bench", "cli"]
SEARCH_ONLY = {"optuna", "ray", "sqlalchemy"}  # deployments install the runtime without them


def _module(path: Path, root: Path = ROOT) -> list[str]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path, text: str | None = None, root: Path = ROOT) -> list[str]:
    """Absolute names of every module (or module attribute) the file (or ``text`` as if it were
    there) imports."""
    mod = _module(path, root)
    package = mod if path.name == "__init__.py" else mod[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            out += [f"{name}.{a.name}" for a in node.names]
    return out


def _layer(parts: list[str]) -> int | None:
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


FILES = [p for p in sorted(ROOT.rglob("*.py")) if p != ROOT / "__init__.py"]


def test_every_module_belongs_to_a_layer():
    assert [p.relative_to(ROOT).as_posix() for p in FILES if _layer(_module(p)) is None] == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_go_down_the_layers_only(path):
    here = _layer(_module(path))
    upward = [name for name in _imports(path) if name.startswith("zeustune.")
              and (there := _layer(name.split("."))) is not None and there > here]
    assert upward == [], f"{path.relative_to(ROOT)} ({LAYERS[here]}) imports from a higher layer"
    if LAYERS[here] in ("schedule", "runtime"):
        assert not {n.split(".")[0] for n in _imports(path)} & SEARCH_ONLY


def test_the_check_sees_lazy_and_relative_imports():
    lookup = ROOT / "models" / "lookup.py"
    assert "zeustune.runtime.families.FAMILIES" in _imports(lookup)  # imported inside a function
    hook = ROOT / "runtime" / "hook.py"
    names = _imports(hook, "def f():\n    from ..search import study\n")
    assert names == ["zeustune.search.study"] and _layer(names[0].split(".")) > _layer(_module(hook))


# -- import circles ------------------------------------------------------------------------------


def _graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports. An imported name counts as its longest prefix that
    is a module of the package (``from .actions import Action`` imports the package actions, ``from .
    import stlpips`` the module stlpips)."""
    files = {".".join(_module(p, root)): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        graph[name] = set()
        for imported in _imports(path, root=root):
            parts = imported.split(".")
            target = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in files), None)
            if target is not None and target != name:
                graph[name].add(target)
    return graph


def circles(root: Path) -> list[list[str]]:
    """The import circles among the modules under ``root`` (a package folder): each a group of modules
    that reach each other through their imports (Tarjan's strongly connected components), sorted."""
    graph = _graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _explain(root: Path, group: list[str]) -> str:
    graph = _graph(root)
    return "; ".join(f"{m} imports {', '.join(sorted(graph[m] & set(group)))}" for m in group)


def test_no_import_circles():
    found = circles(ROOT)
    assert found == [], "import circles:\n" + "\n".join(_explain(ROOT, g) for g in found)


def test_the_circle_check_catches_a_planted_circle(tmp_path):
    """A package whose a imports b at the top and b imports a inside a function (the import on use
    that hides a circle at import time), and a third module that only imports downwards."""
    pkg = tmp_path / "planted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from . import a  # on use\n    return a\n")
    (pkg / "c.py").write_text("from .a import f\nfrom planted import b\n")
    found = circles(pkg)
    print(f"planted: {found}: {_explain(pkg, found[0]) if found else ''}")
    assert found == [["planted.a", "planted.b"]]
    (pkg / "b.py").write_text("def g():\n    return 1\n")  # the circle broken: nothing found
    assert circles(pkg) == []
