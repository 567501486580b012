"""The GitHub workflows are valid and clean under zizmor; the deploy smoke test tells a streaming
relay from a buffering one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_upstream import Script
from tests.helpers import sse_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
SMOKE = ROOT / "infra" / "smoke_test.sh"


def run(*command: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_workflows_match_githubs_schema():
    assert WORKFLOWS
    result = run(
        str(BIN / "check-jsonschema"),
        "--builtin-schema",
        "vendor.github-workflows",
        *map(str, WORKFLOWS),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_clean_under_zizmor():
    result = run(str(BIN / "zizmor"), "--offline", ".github/workflows")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout + result.stderr


def test_zizmor_would_catch_an_injection(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-24.04\n"
        '    steps:\n      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    assert run(str(BIN / "zizmor"), "--offline", str(bad.parent)).returncode != 0


@pytest.fixture
def buffering_server():
    """Answers the whole SSE body at once, the way a relay behind plain Mangum would."""
    frames = b"".join(b'data: {"delta":"%d "}\n\n' % i for i in range(40))
    with sse_server(frames + b"event: done\ndata: {}\n\n", delay_s=1.0) as (url, _):
        yield url


def test_smoke_test_passes_on_a_streaming_relay(upstream, make_relay):
    relay = make_relay(client_tokens="smoke-token-abc")
    upstream.default = Script(tokens=[f"{i}\n" for i in range(1, 41)], delay_s=0.03)
    env = {"PATH": os.environ["PATH"], "RELAY_TOKEN": "smoke-token-abc"}
    result = run(str(SMOKE), relay.url + "/", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: the relay streams" in result.stdout


def test_smoke_test_fails_on_a_buffering_relay(buffering_server):
    result = run(str(SMOKE), buffering_server, env={"PATH": os.environ["PATH"]})
    assert result.returncode == 1
    assert "buffered" in result.stderr


def test_smoke_test_fails_on_an_http_error(upstream, make_relay):
    relay = make_relay(client_tokens="smoke-token-abc")  # and no token given
    result = run(str(SMOKE), relay.url, env={"PATH": os.environ["PATH"]})
    assert result.returncode != 0
