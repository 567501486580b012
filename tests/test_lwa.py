"""The Lambda Web Adapter mode: handler/bin/lwa-start serves the app on AWS_LWA_PORT, and the
app streams over plain HTTP and honours the invocation deadline the adapter passes on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devtools.scripts import Script
from tests.conftest import TEST_KEY
from tests.helpers import SSE, deltas_text, stream

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_lwa_start_script_serves_and_streams_on_the_configured_port(upstream):
    port = _free_port()
    env = {
        "PATH": os.environ["PATH"],
        "RELAY_PYTHON": sys.executable,
        "AWS_LWA_PORT": str(port),
        "AWS_LAMBDA_FUNCTION_NAME": "relay",
        "OPENAI_API_KEY": TEST_KEY,
        "OPENAI_BASE_URL": upstream.base_url,
        "ALLOW_ANONYMOUS": "true",
    }
    process = subprocess.Popen(
        [str(ROOT / "handler" / "bin" / "lwa-start")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:  # what the adapter's readiness check does
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        tokens = [f"w{i} " for i in range(8)]
        upstream.enqueue(Script(tokens=tokens, delay_s=0.1))
        sent_at = time.monotonic()
        response = stream(f"{url}/chat", {"prompt": "hi"}, SSE)
        assert deltas_text(response.events()) == "".join(tokens)
        times = [at for at, _ in response.chunks]
        assert times[-1] - times[0] > 0.3
        call = upstream.last  # the first frame came in the first half of the upstream's answer
        first_frame_at = sent_at + response.chunks[0][0]  # on the upstream's clock
        assert first_frame_at < call.received_at + (call.finished_at - call.received_at) / 2
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    # The same init as the native runtime's, aiohttp's CA store loaded on a thread included
    # (handler/aiohttp_import.py).
    init_line = next(line for line in output.splitlines() if "init: " in line)
    assert "ca_store_wait" in init_line and "first_request" in init_line


def test_deadline_from_the_adapter_header_ends_the_stream_in_time(upstream, relay):
    upstream.enqueue(Script(tokens=[f"t{i} " for i in range(100)], delay_s=0.1))
    context = {"request_id": "abc", "deadline": int((time.time() + 1.5) * 1000)}
    headers = {**SSE, "x-amzn-lambda-context": json.dumps(context)}
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, headers)
    assert time.time() * 1000 < context["deadline"]  # ended before it, not cut off by it
    assert upstream.last.finished_at is None
    events = response.events()
    assert deltas_text(events)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "upstream_timeout"
