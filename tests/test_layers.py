"""The package's layers import downwards only (DESIGN.md): schedule < runtime < models < quality <
search < bench < cli, and the runtime stays free of the search's dependencies. Every import counts,
including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "zeustune"
LAYERS = ["schedule", "runtime", "models", "quality", "search", "bench", "cli"]
SEARCH_ONLY = {"optuna", "ray", "sqlalchemy"}  # deployments install the runtime without them


def _module(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path, text: str | None = None) -> list[str]:
    """Absolute names of every module (or module attribute) the file (or ``text`` as if it were
    there) imports."""
    mod = _module(path)
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
    registry = ROOT / "models" / "registry.py"
    assert "zeustune.runtime.families.FAMILIES" in _imports(registry)  # imported inside a function
    hook = ROOT / "runtime" / "hook.py"
    names = _imports(hook, "def f():\n    from ..search import study\n")
    assert names == ["zeustune.search.study"] and _layer(names[0].split(".")) > _layer(_module(hook))
