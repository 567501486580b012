"""The native runtime's init phase, and what it redoes after a SnapStart restore.

Lambda runs init at full CPU and each invocation at the memory size's share of one CPU, so all
the CPU work that can happen before the first event happens here: aiohttp's CA store loads in a
thread (handler/aiohttp_import.py) and the secret is read in another while the app's modules
import, then the upstream pool (and DynamoDB's, when limits are on) opens its first connection,
one request goes through the app's routing and validation, and what init built is frozen out of
the garbage collector's way.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from handler.aiohttp_import import ca_store_deferred, wait_for_ca_store
from handler.aws import CREDENTIALS
from handler.credentials import CredentialStore, CredentialsUnavailable
from handler.settings import Settings

log = logging.getLogger("relay.init")

# A body every route rejects after authorisation, parsing and validation, without a model call.
_WARM_UP_BODY = b'{"prompt": ""}'


class InitSteps:
    """How long each init step took (ms), logged as one line and read by the benchmark."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.ms: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = round((time.perf_counter() - began) * 1000, 2)

    def line(self) -> str:
        total = round((time.perf_counter() - self.started) * 1000, 1)
        parts = ", ".join(f"{name} {ms:g} ms" for name, ms in self.ms.items())
        return f"init: {total:g} ms ({parts})"


class SecretRead:
    """The secret, read in a thread of its own (with an event loop of its own): importing
    awscrt, building the credential chain and the round trip to Secrets Manager overlap with the
    app's own imports on the main thread."""

    def __init__(self, settings: Settings) -> None:
        self.store = CredentialStore(settings)
        self.error: CredentialsUnavailable | None = None
        self._thread = threading.Thread(target=self._read, name="secret-read", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            # The read may be the process's first TLS connection. Should the CA store fail to
            # load, `warm` raises it before it looks at this read.
            wait_for_ca_store()
        except Exception:
            return
        try:
            asyncio.run(self.store.read())
        except CredentialsUnavailable as exc:
            self.error = exc

    def join(self) -> None:
        self._thread.join()


def start_secret_read(steps: InitSteps) -> SecretRead | None:
    """Start reading the secret when the key comes from Secrets Manager (None otherwise)."""
    with steps.step("settings"):
        settings = Settings()
    if not CredentialStore(settings).refreshable:
        return None
    return SecretRead(settings)


async def warm(app: Any, secret: SecretRead | None, steps: InitSteps) -> None:
    """Everything the first request would otherwise do throttled; a secret that could not be
    read is left for the first request to try again (it answers 503 if that fails too)."""
    relay = app.state.relay
    if ca_store_deferred():
        with steps.step("ca_store_wait"):
            wait_for_ca_store()
    secret_ok = True
    if secret is not None:
        with steps.step("secret_wait"):
            secret.join()
        if secret.error is None:
            relay.credentials.adopt(secret.store)
        else:
            secret_ok = False
            # Its reason is logged where the read failed (credentials.py).
            log.warning("reading the secret during init failed; the first request tries again")
    with steps.step("upstream_connection"):
        await relay.upstream.preconnect()
    if relay.quota.enabled:
        with steps.step("dynamodb_connection"):
            await relay.quota.preconnect()
    if secret_ok:
        with steps.step("first_request"):
            await _exercise_routes(app)
    with steps.step("gc_freeze"):
        # Everything init built moves out of the collector's sight: a full collection walks
        # it all (80-190 ms of CPU here, seconds at 128 MB's share). Collecting first cost as
        # much at init and only freed what init left behind (about 1,500 objects, half a MiB),
        # so it is not done. The runtimes turn the collector off for init; it runs from here.
        gc.freeze()
        gc.enable()
    log.info(steps.line())


async def _exercise_routes(app: Any) -> None:
    """One request through middleware, routing, the relay's dependency and the error table:
    the first pass through code and its lazy imports, paid here and not by the first caller.
    Its request-log line is held back; nobody asked for it."""
    request_log = logging.getLogger("relay.request")
    was_disabled, request_log.disabled = request_log.disabled, True
    sent: list[dict] = []
    scope = post_scope(
        "/chat",
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_WARM_UP_BODY)).encode()),
        ],
    )

    async def receive() -> dict:
        return {"type": "http.request", "body": _WARM_UP_BODY, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    finally:
        request_log.disabled = was_disabled
    status = sent[0].get("status") if sent else None
    if status not in (401, 422):
        log.warning("the init request through the app answered %s", status)


def post_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    """The ASGI scope of a `POST` made inside the process (no client, no network)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"init.invalid"), *headers],
        "client": ("127.0.0.1", 0),
        "server": ("init.invalid", 443),
    }


async def after_restore(app: Any) -> None:
    """What a SnapStart restore makes stale: every environment restored from one snapshot shares
    its memory, so randomness is re-seeded; the AWS credentials (and where they come from: the
    container credentials' address and token) are the restored environment's, so they are
    looked up again; connections in the snapshot are dead, so the pools are dropped and opened
    again; a secret older than its TTL is read again."""
    random.seed()
    CREDENTIALS.renew()
    relay = app.state.relay
    await relay.upstream.close()
    await relay.upstream.preconnect()
    await relay.quota.close()
    await relay.quota.preconnect()
    if relay.credentials.older_than_ttl():
        try:
            await relay.credentials.read()
        except CredentialsUnavailable:
            # Past SECRET_STALE_S too: the first request reads it again, or answers 503.
            log.warning("re-reading the secret after restore failed")
