"""`make test-fast` selects every test but the browser and SAM CLI ones, by registered markers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST = "not browser and not sam"


def collected(*arguments: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "--strict-markers", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {line.split("[")[0] for line in result.stdout.splitlines() if "::" in line}


def test_fast_selection_leaves_out_browser_and_sam_cli_tests_only():
    files = ["tests/test_page.py", "tests/test_sse_parser_js.py", "tests/test_template.py"]
    everything, fast = collected(*files), collected("-m", FAST, *files)
    left_out = everything - fast
    assert {t for t in left_out if "test_template.py" in t} == {
        "tests/test_template.py::test_sam_validate_lint",
        "tests/test_template.py::test_sam_build_works_without_docker",
    }
    browser_tests = {t for t in everything if "test_page.py" in t or "test_sse_parser_js" in t}
    assert browser_tests and browser_tests <= left_out
    assert "tests/test_template.py::test_outputs" in fast  # the offline template checks stay


def test_make_test_fast_uses_that_selection():
    makefile = (ROOT / "Makefile").read_text()
    assert f'-m pytest -q tests -m "{FAST}"' in makefile
