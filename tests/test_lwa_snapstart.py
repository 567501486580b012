"""Lambda Web Adapter 1.1.0's SnapStart hook: with `AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH` set (the
template sets it in lwa mode with SnapStart), the adapter's POST there drops the snapshot's
upstream connection and opens a new one before traffic; without it the path is no route."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from handler.lwa import AFTER_RESTORE_PATH
from tests.conftest import TEST_KEY
from tests.test_lwa import _free_port

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def lwa_server(upstream, **env: str):
    port = _free_port()
    environment = {
        "PATH": os.environ["PATH"],
        "RELAY_PYTHON": sys.executable,
        "AWS_LWA_PORT": str(port),
        "AWS_LAMBDA_FUNCTION_NAME": "relay",
        "OPENAI_API_KEY": TEST_KEY,
        "OPENAI_BASE_URL": upstream.base_url,
        "ALLOW_ANONYMOUS": "true",
        **env,
    }
    process = subprocess.Popen([str(ROOT / "handler" / "bin" / "lwa-start")], env=environment)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:  # the adapter's readiness check
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _model_list_calls(upstream) -> int:
    return sum(1 for r in upstream.requests if r.method == "GET" and r.path.endswith("/models"))


def test_the_after_restore_hook_reconnects_the_upstream(upstream):
    hook = {"AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH": AFTER_RESTORE_PATH}
    with lwa_server(upstream, **hook) as url:
        before = _model_list_calls(upstream)  # init's connection, opened ahead of time
        response = httpx.post(url + AFTER_RESTORE_PATH)
        assert response.status_code == 200
        # A new pooled connection, opened as init opens one (handler/init.py after_restore).
        assert _model_list_calls(upstream) == before + 1
        assert httpx.post(f"{url}/chat", json={"prompt": "hi"}).status_code == 200


def test_without_the_setting_the_hook_path_is_no_route(upstream):
    with lwa_server(upstream) as url:
        before = _model_list_calls(upstream)
        assert httpx.post(url + AFTER_RESTORE_PATH).status_code == 404
        assert _model_list_calls(upstream) == before
