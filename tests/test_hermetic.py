"""A developer's shell cannot change a test's result: conftest clears every variable `Settings`
reads (derived from its fields), so relay settings exported in the shell do not reach a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each of these, left in place, fails tests/test_streaming.py (a 1 ms first-token timeout,
# a 1-token cap, another default model, no system prompt).
HOSTILE_SHELL = {
    "UPSTREAM_TIMEOUT_S": "0.001",
    "PING_INTERVAL_S": "0.001",
    "MAX_TOKENS_CAP": "1",
    "DEFAULT_MODEL": "gpt-5",
    "SYSTEM_PROMPT": "",
}


def test_relay_settings_in_the_shell_do_not_change_the_streaming_tests():
    env = {**os.environ, **HOSTILE_SHELL}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_streaming.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
