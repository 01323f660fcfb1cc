"""Imports go one way: engine <- sync <- api (README, "Architecture").

Every import statement of every module is read, those inside functions too, so a
lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"engine", "sync", "api", "bench", "lua", "migrations", "tests"}
# What each layer may import of ours (itself included).
ALLOWED = {
    "engine": {"engine"},
    "sync": {"engine", "sync"},
    "api": {"engine", "sync", "api"},
    "bench": {"engine", "sync", "api", "bench"},
}


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside its own package
                found.append((node.lineno, package))
            elif node.module:
                found.append((node.lineno, node.module.split(".")[0]))
    return [(line, top) for line, top in found if top in OURS]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_go_one_way(layer: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for line, top in _imports(path, layer)
        if top not in ALLOWED[layer]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from api.settings import Settings\n")
    assert _imports(module, "sync") == [(2, "api")]
