"""`make dev` (python -m infra.local_stack): with no keys at all, the relay streams the demo
upstream's answer, reading the key from moto's Secrets Manager; Ctrl-C stops everything."""

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


def test_make_dev_streams_without_any_key_and_stops_on_ctrl_c():
    port = _free_port()
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "HOME": os.environ.get("HOME", "/")}
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local_stack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "make dev did not start"
            time.sleep(0.2)
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
