"""The documents stay in step with the code: every setting is in both configuration tables, and
every relative link in the README and docs/ points at a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from handler.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def _table_variables(text: str) -> set[str]:
    """Every `NAME` in the first column of the Markdown tables of `text`."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


@pytest.mark.parametrize("document", ["README.md", "docs/api.md"])
def test_every_setting_is_in_the_configuration_table(document):
    documented = _table_variables((ROOT / document).read_text())
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, f"{document} lacks {sorted(missing)}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_of_the_repository(document):
    for target, _ in LINK.findall(document.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = (document.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{document.name} links outside the repo: {target}"
        assert resolved.exists(), f"{document.name} links to a missing file: {target}"
