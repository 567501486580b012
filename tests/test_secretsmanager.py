"""`GetSecretValue` (handler/secretsmanager.py) against moto's real server: awscrt signs with
the process's credential chain (the test session's environment keys), aiohttp carries it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from handler.aws import AwsEnvironment
from handler.secretsmanager import SecretReadFailed, SecretsManager
from tests.helpers import LoopbackHandler, loopback_server, run_coroutine


def test_reads_the_secret_and_names_a_missing_one(secrets, moto_endpoint):
    client = SecretsManager(AwsEnvironment(region="us-east-1", endpoint_url=moto_endpoint))
    secrets.create_secret(Name="relay-test/direct", SecretString="sk-direct-read-0123456789")
    value = run_coroutine(client.get_secret_value("relay-test/direct"))
    assert value == "sk-direct-read-0123456789"
    with pytest.raises(SecretReadFailed, match=r"^HTTP 4\d\d \(ResourceNotFoundException\)$"):
        run_coroutine(client.get_secret_value("relay-test/absent"))


def test_a_binary_secret_is_read_as_its_bytes(secrets, moto_endpoint):
    client = SecretsManager(AwsEnvironment(region="us-east-1", endpoint_url=moto_endpoint))
    secrets.create_secret(Name="relay-test/binary", SecretBinary=b"\x00\xffsk-binary-0123")
    assert run_coroutine(client.get_secret_value("relay-test/binary")) == b"\x00\xffsk-binary-0123"


@contextmanager
def keep_alive_secrets(secret: str) -> Iterator[tuple[str, threading.Event]]:
    """A Secrets Manager on loopback that keeps each connection open (HTTP/1.1) until the client
    closes it; the event is set when a client has closed one."""
    closed = threading.Event()

    class KeepAlive(LoopbackHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self.answer(200, json.dumps({"SecretString": secret}).encode(), "application/json")

        def finish(self):
            super().finish()
            closed.set()

    with loopback_server(KeepAlive) as url:
        yield url, closed


def test_a_secret_read_closes_its_connection():
    """A read happens at init and then once per SECRET_TTL_S: it opens its own connection and
    closes it, rather than keep one in a pool that the next read would find closed."""
    with keep_alive_secrets("sk-kept-alive-0123") as (url, closed):

        async def read() -> tuple[str | bytes, bool]:
            client = SecretsManager(AwsEnvironment(region="us-east-1", endpoint_url=url))
            value = await client.get_secret_value("relay")
            return value, await asyncio.to_thread(closed.wait, 10)

        assert run_coroutine(read()) == ("sk-kept-alive-0123", True)
