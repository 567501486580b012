"""The Lambda-shaped benchmark (bench/cold.py) runs end to end at its tiny scale, so it cannot rot.

No timing is asserted. Where cgroups cannot be written the benchmark says so instead of
measuring, and this test reports a skip with that reason rather than passing; in CI (CI=true),
whose machines are root with writable cgroups like the developers', that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import lambda_report
from bench.package import PREVIOUS_RELEASE

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = {"native", "previous", "lwa", "buffered", "floor"}


def test_tiny_lambda_shaped_run_measures_every_contender_or_says_why_not(tmp_path):
    results_path = tmp_path / "latest.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.cold", "--scale", "tiny", "--results", results_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figure = json.loads(results_path.read_text())["figures"]["lambda"]
    if "skipped" in figure:
        assert figure["skipped"].startswith("skipped: ")
        assert figure["skipped"] in run.stdout
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"the Lambda-shaped benchmark did not measure in CI: {figure['skipped']}")
        pytest.skip(f"the Lambda-shaped benchmark did not measure: {figure['skipped']}")
    assert set(figure["sizes"]) == {"full", "128"}
    assert figure["package"] in {"make package", "bench"}  # what every contender ran from
    for size, contenders in figure["sizes"].items():
        assert set(contenders) == CONTENDERS, size
        for name, entry in contenders.items():
            assert entry["init_ms"] > 0 and entry["first_token_ms"] > 0, (size, name)
            assert entry["warm_ttft_p50_ms"] > 0 and entry["tokens_per_s"] > 0, (size, name)
            assert entry["peak_rss_mib"] > 0, (size, name)
    # The packaged runtime's init, aiohttp's CA store loaded on a thread included.
    steps = {"app", "first_request", "ca_store_wait"}
    assert set(figure["sizes"]["128"]["native"]["init_steps_ms"]) >= steps
    assert (tmp_path / "lambda.png").read_bytes().startswith(b"\x89PNG")
    results = {"figures": {"lambda": figure}}
    targets = lambda_report.targets(results)
    assert len(targets) == 5
    # The two goals in milliseconds are also judged at this run's floor, as the issue asks.
    scaled = [t for t in targets if "scaled_limit" in t]
    assert len(scaled) == 2 and all(t["floor_ms"] > 0 for t in scaled)
    # Measured, not compared: which is larger is the benchmark's to report, not a test's.
    imports = figure["import_cpu"]
    assert set(imports) == {"interpreter_ms", "libraries_ms", "app_ms"}, imports
    assert imports["libraries_ms"] > 0 and imports["app_ms"] > 0, imports
    assert "Goals of issue 16" in run.stdout and "| 128 MB | native runtime |" in run.stdout
    # The previous release ran its own `handler` (its init had no CA-store thread yet), and the
    # report sets the two releases side by side.
    previous_steps = set(figure["sizes"]["128"]["previous"]["init_steps_ms"])
    assert "first_request" in previous_steps and "ca_store_wait" not in previous_steps
    assert figure["contenders"]["previous"].endswith(PREVIOUS_RELEASE)
    assert f"Against the native runtime, previous release {PREVIOUS_RELEASE}" in run.stdout


def test_import_ab_times_init_imports_both_ways():
    """bench/import_ab.py, one pair: both ways of importing aiohttp are timed from the package."""
    run = subprocess.run(
        [sys.executable, "-m", "bench.import_ab", "--pairs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    timed = {line.split()[0]: line.split() for line in run.stdout.splitlines() if "median" in line}
    assert set(timed) == {"thread", "main"}
    for words in timed.values():
        assert float(words[3]) > 0 and float(words[6]) > 0, words
