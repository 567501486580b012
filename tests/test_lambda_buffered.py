"""`handler.app.handler` (Mangum, buffered) answers the sample function URL events in events/,
as `sam local invoke -e events/chat.json` would: status 200 and the whole body at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.scripts import Script
from tests.conftest import TEST_KEY
from tests.helpers import deltas_text, parse_sse

ROOT = Path(__file__).resolve().parent.parent
INVOKE = """
import json, sys
from handler.app import handler
for path in sys.argv[1:]:
    print(json.dumps(handler(json.load(open(path)), None)))
"""
TOKENS = ["Knock", " knock.\n", " Who's", " there? ", "🚪"]


def invoke_buffered(upstream, *events: str, **env: str) -> list[dict]:
    environment = {
        "PATH": os.environ["PATH"],
        "OPENAI_API_KEY": TEST_KEY,
        "OPENAI_BASE_URL": upstream.base_url,
        "ALLOW_ANONYMOUS": "true",
        **env,
    }
    paths = [str(ROOT / "events" / name) for name in events]
    result = subprocess.run(
        [sys.executable, "-c", INVOKE, *paths],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert TEST_KEY not in result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"')]


def test_sample_events_through_mangum(upstream):
    upstream.default = Script(tokens=TOKENS)
    chat, text, health = invoke_buffered(upstream, "chat.json", "chat-text.json", "healthz.json")

    assert chat["statusCode"] == 200
    assert chat["headers"]["content-type"] == "text/event-stream; charset=utf-8"
    events = parse_sse(chat["body"])
    assert deltas_text(events) == "".join(TOKENS)
    assert events[-1][0] == "done"

    assert text["statusCode"] == 200
    assert text["body"] == "".join(TOKENS)

    assert health["statusCode"] == 200
    assert json.loads(health["body"]) == {"status": "ok"}
    assert [r.body["messages"][-1]["content"] for r in upstream.requests] == ["Tell me a joke!"] * 2


@pytest.mark.parametrize(
    "event",
    [
        "chat.json",
        "healthz.json",
        "chat-text.json",
        "completions.json",
        "ui-chat.json",
        "responses.json",
    ],
)
def test_sample_events_are_function_url_payloads(event):
    data = json.loads((ROOT / "events" / event).read_text())
    assert data["version"] == "2.0"
    assert data["requestContext"]["http"]["method"] in {"GET", "POST"}
    assert data["rawPath"] == data["requestContext"]["http"]["path"]
