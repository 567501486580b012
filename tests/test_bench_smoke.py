"""The benchmark runs end to end at tiny sizes, so `make bench` cannot rot unnoticed.

No timing is asserted: performance is judged from a full `make bench`, not from pass/fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALWAYS = {"direct", "relay_sse", "relay_text", "relay_v1", "buffered", "baseline"}
NATIVE = {"native_sse", "native_text", "native_v1"}


def test_tiny_benchmark_measures_every_contender(tmp_path):
    out, chart = tmp_path / "latest.json", tmp_path / "chart.png"
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--scale", "tiny", "--out", out, "--chart", chart],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    figures = results["figures"]

    contenders = set(results["contenders"])
    assert contenders >= ALWAYS
    if (ROOT / "handler" / "runtime.py").exists():
        assert contenders >= NATIVE
    for name in contenders:
        assert figures["ttft"]["contenders"][name]["p50_ms"] > 0, name
        assert figures["throughput"]["contenders"][name]["chunks_per_s"] > 0, name
    http = {n for n, c in results["contenders"].items() if c["kind"] == "http"}
    for level in figures["concurrency"]["streams"].values():
        assert set(level) == http
        for name, entry in level.items():
            assert entry["lost_or_reordered"] == 0, (name, entry["failures"])
            assert entry["wall_s"] > 0 and entry["max_gap_ms"] is not None, name

    assert figures["package"]["zipped_mib"] > 0 and figures["package"]["pyc_files"] > 0
    if contenders >= NATIVE:
        assert figures["memory"]["peak_rss_mib"] > 0
        cold = figures["cold_start"]
        assert cold["packaged"]["first_byte_p50_ms"] > 0 and cold["no_bytecode"]["import_top"]
    assert {t["target"] for t in results["targets"]} and all("met" in t for t in results["targets"])
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "Targets (issue 6)" in run.stdout
