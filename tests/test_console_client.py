"""tools/chat.py against the local relay, as a subprocess over real HTTP."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devtools.scripts import Script
from tests.helpers import sse_server

ROOT = Path(__file__).resolve().parent.parent
TOKENS = ["Knock", " knock.\n", "Who's ", "thére? ", "🚪"]
ACCESS_KEY, SECRET_KEY = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def chat(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "chat.py"), *args],
        input=stdin,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_streamed_output_equals_the_upstream_text(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS, delay_s=0.02))
    result = chat("--url", relay.url, "Tell me a joke")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(TOKENS)
    assert re.search(r"TTFT \d+ ms · [\d.]+ tokens/s · 5 tokens", result.stderr)


def test_raw_mode_uses_plain_text(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS))
    result = chat("--url", relay.url, "--raw", "Tell me a joke")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(TOKENS)


def test_http_error_exits_non_zero_with_its_type(upstream, make_relay):
    relay = make_relay(client_tokens="console-token-1", allow_anonymous=False)
    result = chat("--url", relay.url, "hi")
    assert result.returncode == 1
    assert "error (unauthorized)" in result.stderr
    ok = chat("--url", relay.url, "--token", "console-token-1", "hi")
    assert ok.returncode == 0, ok.stderr


def test_stream_error_exits_non_zero(upstream, relay):
    upstream.enqueue(Script(tokens=list("abcdef"), delay_s=0.01, die_after=2))
    result = chat("--url", relay.url, "hi")
    assert result.returncode == 1
    assert result.stdout == "ab"
    assert "error (upstream_error)" in result.stderr


def test_interactive_mode_keeps_the_conversation(upstream, relay):
    upstream.enqueue(Script(tokens=["Paris."]), Script(tokens=["Two million."]))
    result = chat("--url", relay.url, stdin="Capital of France?\nHow many people?\n")
    assert result.returncode == 0, result.stderr
    assert "Paris." in result.stdout and "Two million." in result.stdout
    conversation = [m for m in upstream.last.body["messages"] if m["role"] != "system"]
    assert conversation == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "How many people?"},
    ]


@pytest.fixture
def recording_server():
    """Records the request, answers a one-frame SSE stream."""
    with sse_server(b'data: {"delta":"signed"}\n\nevent: done\ndata: {}\n\n') as server:
        yield server


def test_iam_signs_a_valid_sigv4_request(recording_server):
    url, seen = recording_server
    result = chat(
        "--url",
        url,
        "--iam",
        "--region",
        "eu-west-1",
        "hi",
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "signed"
    headers = seen["headers"]
    authorization = headers["authorization"]
    amz_date = headers["x-amz-date"]
    scope = f"{ACCESS_KEY}/{amz_date[:8]}/eu-west-1/lambda/aws4_request"
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=")
    signed_names = re.search(r"SignedHeaders=([^,]+)", authorization).group(1).split(";")
    assert {"host", "x-amz-date", "content-type"} <= set(signed_names)

    # Recompute the signature, independently, from what the server received.
    request = AWSRequest(
        method="POST",
        url=f"{url}{seen['path']}",
        data=seen["body"],
        headers={name: headers[name] for name in signed_names},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", "eu-west-1")
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    assert authorization.endswith(f"Signature={expected}")
    assert datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")

    # A wrong secret would not have produced it: the check can fail.
    other = SigV4Auth(Credentials(ACCESS_KEY, "not-the-secret"), "lambda", "eu-west-1")
    assert not authorization.endswith(
        other.signature(signer.string_to_sign(request, canonical), request)
    )
