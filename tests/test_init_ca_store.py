"""The CA store of aiohttp's default TLS context, loaded in a thread during init
(handler/aiohttp_import.py): aiohttp's import parses no store, the verified context ends up with
the one `ssl.create_default_context()` loads (the operator's `SSL_CERT_FILE` included, which is
put back), and the secret's read over TLS at init is verified with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws_fakes import FakeAws, runtime_env_reading, self_signed_certificate
from tests.conftest import TEST_KEY
from tests.test_runtime import CHAT_EVENT

ROOT = Path(__file__).resolve().parent.parent
SECRET_ID = "relay/openai-over-tls"

# In a fresh interpreter: the CA certificates of aiohttp's two default contexts right after its
# import, and of the verified one once loaded, beside what `ssl.create_default_context()` loads.
_IMPORTED_BY_INIT = """
import json, os, ssl
from handler import aiohttp_import
aiohttp_import.import_aiohttp()
from aiohttp import connector
after_import = connector._SSL_CONTEXT_UNVERIFIED.cert_store_stats()["x509_ca"]
variable = os.environ.get("SSL_CERT_FILE")
aiohttp_import.wait_for_ca_store()
print(json.dumps({
    "unverified_after_import": after_import,
    "variable_after_import": variable,
    "verified": connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "default": ssl.create_default_context().cert_store_stats()["x509_ca"],
}))
"""
_IMPORTED_PLAINLY = """
from aiohttp import connector
print(connector._SSL_CONTEXT_UNVERIFIED.cert_store_stats()["x509_ca"])
"""


def _run(code: str, ca_file: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    if ca_file is not None:
        env["SSL_CERT_FILE"] = ca_file
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("operators_file", [False, True], ids=["system store", "SSL_CERT_FILE"])
def test_aiohttp_imported_by_init_parses_no_ca_store_and_then_holds_the_default_one(
    tmp_path, operators_file
):
    ca_file = self_signed_certificate(tmp_path)[1] if operators_file else None
    seen = json.loads(_run(_IMPORTED_BY_INIT, ca_file))
    # The import itself parsed no store: aiohttp's other context, which loads the default store
    # too on a plain import, holds none...
    assert int(_run(_IMPORTED_PLAINLY, ca_file)) == seen["default"] > 0
    assert seen["unverified_after_import"] == 0
    # ...the operator's variable (or its absence) was put back as soon as the import was done...
    assert seen["variable_after_import"] == ca_file
    # ...and the verified context holds exactly what a default context loads: the system's store,
    # or the one certificate of the operator's file.
    assert seen["verified"] == seen["default"]
    if operators_file:
        assert seen["verified"] == 1


@pytest.fixture
def aws_over_tls(tmp_path):
    tls, bundle = self_signed_certificate(tmp_path)
    fake = FakeAws(secrets={SECRET_ID: TEST_KEY}).start(tls)
    yield fake, bundle
    fake.stop()


def test_init_reads_the_secret_over_tls_verified_by_the_store_it_loaded_in_a_thread(
    start_runtime, runtime_api, upstream, aws_over_tls
):
    """The secret's read is init's first TLS connection, on its own thread: it waits for the
    store (here the operator's `SSL_CERT_FILE`, the only thing that trusts the endpoint) and
    succeeds, so the first request needs no read of its own."""
    fake, bundle = aws_over_tls
    runtime = start_runtime(**runtime_env_reading(fake, SECRET_ID, SSL_CERT_FILE=bundle))
    assert runtime_api.emulator.polled.wait(30)
    assert fake.secret_reads() == 1
    invocation = runtime.invoke(CHAT_EVENT)
    assert invocation.prelude_and_body()[0]["statusCode"] == 200
    assert fake.secret_reads() == 1
    assert upstream.last.headers["authorization"] == f"Bearer {TEST_KEY}"
    # The runtime imported aiohttp this way before anything else did (init times the wait).
    init_line = next(line for line in runtime.lines if line.startswith("init: "))
    assert "ca_store_wait" in init_line


def test_an_endpoint_the_loaded_store_does_not_trust_is_refused(
    start_runtime, runtime_api, upstream, aws_over_tls
):
    """Without the operator's file the endpoint's certificate is trusted by nothing: the read
    fails verification (never goes through unverified) and the request answers 503."""
    fake, _ = aws_over_tls
    runtime = start_runtime(**runtime_env_reading(fake, SECRET_ID))
    assert runtime_api.emulator.polled.wait(30)
    invocation = runtime.invoke(CHAT_EVENT)
    prelude, body = invocation.prelude_and_body()
    assert prelude["statusCode"] == 503
    assert json.loads(body)["error"]["type"] == "credentials_unavailable"
    assert fake.secret_reads() == 0  # no request got through the handshake
    assert [r for r in upstream.requests if r.method == "POST"] == []
