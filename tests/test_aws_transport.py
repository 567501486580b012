"""The AWS calls' transport settings, read from the SDKs' standard variables (handler/aws.py):
`HTTP(S)_PROXY` and `NO_PROXY`, `AWS_CA_BUNDLE`, and an endpoint URL with a path, against the
fake AWS endpoint (tests/aws_fakes.py) and a forward proxy on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from handler.aws import AwsEnvironment, AwsJsonClient
from handler.dynamodb import UPDATE_ITEM, dynamodb_service
from handler.settings import aws_environment
from tests.aws_fakes import FakeAws, self_signed_certificate
from tests.helpers import LoopbackHandler, loopback_server, run_coroutine

ITEM = {"TableName": "quota", "Key": {"pk": {"S": "quota#x"}}}


@contextmanager
def forward_proxy() -> Iterator[tuple[str, list[str]]]:
    """An HTTP forward proxy on loopback: it notes each absolute URL asked of it and fetches it."""
    seen: list[str] = []

    class Forward(LoopbackHandler):
        def do_POST(self):
            seen.append(self.path)
            body = self.rfile.read(int(self.headers["content-length"]))
            skip = {"content-length", "connection", "proxy-connection"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            answer = httpx.post(self.path, content=body, headers=headers, trust_env=False)
            self.answer(answer.status_code, answer.content, answer.headers.get("content-type"))

    with loopback_server(Forward) as url:
        yield url, seen


def update_item(client: AwsJsonClient) -> dict:
    async def call() -> dict:
        try:
            return await client.call(UPDATE_ITEM, ITEM)
        finally:
            await client.close()

    return run_coroutine(call())


@pytest.fixture
def fake_aws():
    fake = FakeAws().start()
    yield fake
    fake.stop()


@pytest.fixture
def no_proxy_variables(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_calls_go_through_the_proxy_the_environment_names(
    fake_aws, monkeypatch, no_proxy_variables
):
    with forward_proxy() as (proxy, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        client = AwsJsonClient(dynamodb_service(1, 1, 3), AwsEnvironment("us-east-1", fake_aws.url))
        assert update_item(client) == {}
    assert [url.rstrip("/") for url in seen] == [fake_aws.url]
    assert [c.code for c in fake_aws.calls] == [None]  # the signature held through the proxy


def test_no_proxy_keeps_a_host_off_the_proxy(fake_aws, monkeypatch, no_proxy_variables):
    with forward_proxy() as (proxy, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        client = AwsJsonClient(dynamodb_service(1, 1, 3), AwsEnvironment("us-east-1", fake_aws.url))
        assert update_item(client) == {}
    assert seen == []
    assert len(fake_aws.calls) == 1


def test_aws_ca_bundle_is_what_verifies_the_endpoint(tmp_path, monkeypatch, no_proxy_variables):
    tls, bundle = self_signed_certificate(tmp_path)
    fake = FakeAws().start(tls)
    try:
        untrusted = AwsJsonClient(dynamodb_service(1, 1, 3), AwsEnvironment("us-east-1", fake.url))
        with pytest.raises(Exception, match="Certificate"):
            update_item(untrusted)
        assert fake.calls == []
        monkeypatch.setenv("AWS_ENDPOINT_URL", fake.url)
        monkeypatch.setenv("AWS_CA_BUNDLE", bundle)
        trusted = AwsJsonClient(dynamodb_service(1, 1, 3), aws_environment("DYNAMODB"))
        assert update_item(trusted) == {}
    finally:
        fake.stop()
    assert [c.code for c in fake.calls] == [None]


def test_an_endpoint_url_with_a_path_is_called_and_signed_at_that_path(monkeypatch):
    """A gateway that serves AWS under a path: the request goes to that path, and the signature
    (checked by the fake, which sits behind the gateway's path) covers it."""
    fake = FakeAws().start()
    seen: list[str] = []

    class Gateway(LoopbackHandler):
        def do_POST(self):
            seen.append(self.path)
            body = self.rfile.read(int(self.headers["content-length"]))
            answer = httpx.post(
                fake.url + self.path,
                content=body,
                headers={k: v for k, v in self.headers.items() if k.lower() != "content-length"},
            )
            self.answer(answer.status_code, answer.content, answer.headers.get("content-type"))

    try:
        with loopback_server(Gateway) as gateway:
            monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"{gateway}/aws/dynamodb")
            client = AwsJsonClient(dynamodb_service(1, 1, 3), aws_environment("DYNAMODB"))
            assert update_item(client) == {}
    finally:
        fake.stop()
    assert seen == ["/aws/dynamodb"]
    assert [c.code for c in fake.calls] == [None]
