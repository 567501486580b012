"""`make dev` (python -m infra.local_stack): with no keys at all, the relay streams the demo
upstream's answer, reading the key from moto's Secrets Manager; limits count in moto's DynamoDB;
Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.helpers import SSE, deltas_text, stream

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_make_dev(port: int, **extra_env: str) -> subprocess.Popen:
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "HOME": os.environ.get("HOME", "/")}
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local_stack"],
        cwd=ROOT,
        env=env | extra_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            output = process.communicate()[0]
            raise AssertionError(f"make dev did not start:\n{output[-3000:]}")
        time.sleep(0.2)


def test_make_dev_streams_without_any_key_and_stops_on_ctrl_c():
    port = _free_port()
    process = start_make_dev(port)
    try:
        url = f"http://127.0.0.1:{port}"
        listening = {c.laddr.port for c in psutil.Process(process.pid).net_connections("tcp")}
        assert len(listening) >= 3  # relay, moto, demo upstream

        response = stream(f"{url}/chat", {"prompt": "Tell me a joke!"}, SSE)
        text = deltas_text(response.events())
        assert "offline demo upstream" in text
        assert response.events()[-1][0] == "done"
        times = [at for at, _ in response.chunks]
        assert times[-1] - times[0] > 1.0  # paced like a real model, and relayed as it comes
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    assert process.returncode is not None
    assert "OFFLINE DEMO upstream" in output
    assert f"curl -N http://127.0.0.1:{port}/chat" in output
    assert "local/openai" in output
    assert "ANONYMOUS: no token needed (ALLOW_ANONYMOUS=true" in output  # make dev says it is open
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing left listening


def test_make_dev_counts_a_rate_limit_in_its_local_dynamodb():
    port = _free_port()
    process = start_make_dev(port, RATE_LIMIT_PER_MINUTE="1")
    try:
        url = f"http://127.0.0.1:{port}"
        if time.time() % 60 > 50:  # both requests in one clock minute
            time.sleep(60.5 - time.time() % 60)
        assert httpx.post(f"{url}/chat", json={"prompt": "hi"}, timeout=30).status_code == 200
        refused = httpx.post(f"{url}/chat", json={"prompt": "hi"}, timeout=30)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limited"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    assert "quota table      'local-quota'" in output
    assert "RATE_LIMIT_PER_MINUTE=1" in output
