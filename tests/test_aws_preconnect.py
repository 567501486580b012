"""The AWS client's preconnect (handler/aws.py, `AwsJsonClient.preconnect`), which init calls
before any request: it builds and asks the credential chain once, so the first signature finds
them cached, and opens the pool with one kept-alive connection; it says whether it did. Against
the fake AWS endpoint and container-credentials endpoint on loopback (tests/aws_fakes.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from handler.aws import AwsEnvironment, AwsJsonClient, CredentialChain
from handler.dynamodb import UPDATE_ITEM, dynamodb_service
from tests.aws_fakes import ContainerCredentials, FakeAws
from tests.helpers import LoopbackHandler, loopback_server, run_coroutine
from tests.test_aws_call_outcomes import silent_endpoint
from tests.test_quota import dead_endpoint

ITEM = {"TableName": "quota", "Key": {"pk": {"S": "quota#x"}}}


@pytest.fixture
def fake_aws():
    fake = FakeAws().start()
    yield fake
    fake.stop()


@pytest.fixture
def container(monkeypatch):
    """Container credentials as the only source (no keys in the environment, no profiles)."""
    credentials = ContainerCredentials().start()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in credentials.environment.items():
        monkeypatch.setenv(name, value)
    yield credentials
    credentials.stop()


def preconnected(client: AwsJsonClient) -> bool:
    async def run() -> bool:
        try:
            return await client.preconnect()
        finally:
            await client.close()

    return run_coroutine(run())


def test_preconnect_says_whether_a_connection_is_pooled(fake_aws):
    environment = AwsEnvironment("us-east-1", fake_aws.url)
    assert preconnected(AwsJsonClient(dynamodb_service(1, 1, 3), environment)) is True
    unreachable = AwsEnvironment("us-east-1", dead_endpoint())
    assert preconnected(AwsJsonClient(dynamodb_service(1, 1, 3), unreachable)) is False
    nowhere = AwsEnvironment(region=None, endpoint_url=None)  # no region, no endpoint: no URL
    assert preconnected(AwsJsonClient(dynamodb_service(1, 1, 3), nowhere)) is False
    assert fake_aws.calls == []  # `GET /` only: no signed call


def test_preconnect_fetches_the_credentials_before_the_first_call(fake_aws, container):
    """Container credentials are fetched by preconnect (at init), and the first call signs with
    them without fetching again."""
    fake_aws.keys = {"CONTAINERKEY1": "container-secret-1"}
    client = AwsJsonClient(
        dynamodb_service(1, 1, 3),
        AwsEnvironment("us-east-1", fake_aws.url),
        credentials=CredentialChain(),
    )

    async def preconnect_then_call() -> tuple[int, dict]:
        try:
            assert await client.preconnect()
            fetched_at_preconnect = container.fetches
            return fetched_at_preconnect, await client.call(UPDATE_ITEM, ITEM)
        finally:
            await client.close()

    assert run_coroutine(preconnect_then_call()) == (1, {})
    assert container.fetches == 1
    assert [(c.access_key, c.code) for c in fake_aws.calls] == [("CONTAINERKEY1", None)]


@dataclass
class Connections:
    opened: int = 0
    closed: int = 0
    all_closed: threading.Event = field(default_factory=threading.Event)


@contextmanager
def keep_alive_aws() -> Iterator[tuple[str, Connections]]:
    """An AWS endpoint on loopback that keeps each connection open (HTTP/1.1) until the client
    closes it, answering `GET /` and any call; it counts the connections opened and closed."""
    connections = Connections()
    lock = threading.Lock()

    class KeepAlive(LoopbackHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            with lock:
                connections.opened += 1

        def do_GET(self):
            self.answer(200, b"healthy")

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self.answer(200, json.dumps({}).encode(), "application/x-amz-json-1.0")

        def finish(self):
            super().finish()
            with lock:
                connections.closed += 1
                if connections.closed == connections.opened:
                    connections.all_closed.set()

    with loopback_server(KeepAlive) as url:
        yield url, connections


def test_the_calls_use_the_connection_preconnect_opened_and_close_ends_it(caplog):
    """One connection for preconnect and the calls; close() closes the pool itself, rather than
    leave it to the garbage collector, which closes the socket too but logs an error for it."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    with keep_alive_aws() as (url, connections):
        client = AwsJsonClient(dynamodb_service(1, 1, 3), AwsEnvironment("us-east-1", url))

        async def preconnect_call_twice_close_twice() -> list:
            answers = [await client.preconnect()]
            answers += [await client.call(UPDATE_ITEM, ITEM), await client.call(UPDATE_ITEM, ITEM)]
            await client.close()
            await client.close()  # a second close (shutdown after a restore) has nothing to do
            answers.append(await asyncio.to_thread(connections.all_closed.wait, 10))
            return answers

        assert run_coroutine(preconnect_call_twice_close_twice()) == [True, {}, {}, True]
    assert (connections.opened, connections.closed) == (1, 1)
    assert [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()] == []


def test_a_client_used_from_another_event_loop_opens_a_pool_of_its_own_there():
    """As after a SnapStart restore, or the tests' own loops: the pool made in one event loop is
    not used from another."""
    with keep_alive_aws() as (url, connections):
        client = AwsJsonClient(dynamodb_service(1, 1, 3), AwsEnvironment("us-east-1", url))
        assert run_coroutine(client.call(UPDATE_ITEM, ITEM)) == {}

        async def call_then_close() -> dict:
            try:
                return await client.call(UPDATE_ITEM, ITEM)
            finally:
                await client.close()

        assert run_coroutine(call_then_close()) == {}
    assert connections.opened == 2


def test_preconnect_without_credentials_yet_still_opens_the_pool(fake_aws, container):
    """The first call reports missing credentials, with its retries; preconnect only warms."""
    container.token = "another-token"  # the endpoint refuses the process's token
    client = AwsJsonClient(
        dynamodb_service(1, 1, 3),
        AwsEnvironment("us-east-1", fake_aws.url),
        credentials=CredentialChain(),
    )
    assert preconnected(client) is True
    assert fake_aws.calls == []


def test_preconnect_to_an_endpoint_that_hangs_up_or_never_answers_is_no_connection():
    class HangUp(LoopbackHandler):
        def do_GET(self):
            self.close_connection = True  # no answer: the connection just closes

    with loopback_server(HangUp) as url:
        hung_up = AwsJsonClient(dynamodb_service(1, 1, 3), AwsEnvironment("us-east-1", url))
        assert preconnected(hung_up) is False
    with silent_endpoint() as url:
        silent = AwsJsonClient(dynamodb_service(1, 1, 0.3), AwsEnvironment("us-east-1", url))
        assert preconnected(silent) is False
