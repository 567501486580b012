"""The project's folders import each other in one direction only: handler/ (what Lambda runs)
imports none of the others, and devtools/ (the local doubles) imports neither the tests, the
benchmarks nor infra/, so every one of them can use it and none is dragged into the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def top_level_imports(folder: str) -> dict[str, set[str]]:
    """For each module in `folder`, the first component of every package it imports."""
    imports: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        imports[str(path.relative_to(ROOT))] = names
    return imports


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("handler", {"devtools", "tests", "bench", "infra", "tools"}),
        ("devtools", {"tests", "bench", "infra", "tools"}),
    ],
)
def test_folder_imports_point_one_way(folder, forbidden):
    imports = top_level_imports(folder)
    assert imports, f"no modules found in {folder}/"
    wrong = {module: names & forbidden for module, names in imports.items() if names & forbidden}
    assert wrong == {}
