"""How often the relay calls Secrets Manager, counted at a proxy in front of moto: a failed
`GetSecretValue` is tried again, concurrent callers on a cold cache share one read, and the
runtime's init reads the secret once for itself and the first request."""

from __future__ import annotations

import json
import threading
import time

from devtools.scripts import Script
from tests.conftest import TEST_KEY
from tests.helpers import SSE, counting_proxy, stream
from tests.runtime_process import ROOT

GET_SECRET = "secretsmanager.GetSecretValue"
COMPLETIONS_EVENT = json.loads((ROOT / "events" / "completions.json").read_text())
CHAT_EVENT = json.loads((ROOT / "events" / "chat.json").read_text())


def secret_relay(make_relay, monkeypatch, secret_id: str, endpoint: str):
    """A relay that reads its key from Secrets Manager at `endpoint` (the proxy), as on Lambda."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
    return make_relay(openai_api_key=None, openai_secret_id=secret_id)


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "OPENAI_API_KEY": "",
    }


def test_a_get_secret_value_failing_with_a_server_error_is_tried_again(
    upstream, make_relay, secrets, moto_endpoint, monkeypatch
):
    arn = secrets.create_secret(Name="relay-test/retried", SecretString=TEST_KEY)["ARN"]
    with counting_proxy(moto_endpoint, failures=1) as (endpoint, targets):
        relay = secret_relay(make_relay, monkeypatch, arn, endpoint)
        assert stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).status == 200
    assert targets == [GET_SECRET, GET_SECRET]
    assert upstream.last.headers["authorization"] == f"Bearer {TEST_KEY}"


def test_a_throttled_get_secret_value_is_tried_again(
    upstream, make_relay, secrets, moto_endpoint, monkeypatch
):
    arn = secrets.create_secret(Name="relay-test/throttled", SecretString=TEST_KEY)["ARN"]
    throttled = (400, "ThrottlingException")
    with counting_proxy(moto_endpoint, failures=1, failure=throttled) as (endpoint, targets):
        relay = secret_relay(make_relay, monkeypatch, arn, endpoint)
        assert stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).status == 200
    assert targets == [GET_SECRET, GET_SECRET]


def test_a_missing_secret_is_not_retried(upstream, make_relay, moto_endpoint, monkeypatch):
    """A 4xx other than throttling will not change by asking again: one call, then 503."""
    with counting_proxy(moto_endpoint) as (endpoint, targets):
        relay = secret_relay(make_relay, monkeypatch, "relay-test/absent", endpoint)
        response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert response.status == 503
    assert targets == [GET_SECRET]


def test_init_reads_the_secret_once_for_itself_and_the_first_request(
    start_runtime, runtime_api, secrets, moto_endpoint
):
    arn = secrets.create_secret(Name="relay-test/init-once", SecretString=TEST_KEY)["ARN"]
    with counting_proxy(moto_endpoint) as (endpoint, targets):
        runtime = start_runtime(OPENAI_SECRET_ID=arn, **aws_env(endpoint))
        assert runtime_api.emulator.polled.wait(30)
        assert targets == [GET_SECRET]  # read during init
        prelude, _ = runtime.invoke(CHAT_EVENT).prelude_and_body()
        assert prelude["statusCode"] == 200
    assert targets == [GET_SECRET]  # and not again for the first request


def test_concurrent_invocations_on_a_cold_cache_share_one_read(
    start_runtime, runtime_api, upstream, secrets, moto_endpoint
):
    """Init could not read the secret (it did not exist yet), so the cache is cold when 16
    invocations arrive at once: they wait for one `GetSecretValue`, held at the proxy until
    every invocation has been handed to the runtime."""
    name = "relay-test/cold-concurrent"
    upstream.default = Script(tokens=["shared ", "read"])
    gate = threading.Event()
    gate.set()  # open during init
    with counting_proxy(moto_endpoint, hold=gate) as (endpoint, targets):
        runtime = start_runtime(
            OPENAI_SECRET_ID=name, AWS_LAMBDA_MAX_CONCURRENCY="16", **aws_env(endpoint)
        )
        assert runtime_api.emulator.polled.wait(30)
        read_at_init = len(targets)
        assert read_at_init >= 1  # init tried, and failed: the secret did not exist
        secrets.create_secret(Name=name, SecretString=TEST_KEY)
        gate.clear()  # from now on the proxy holds every call until all invocations are in
        invocations = [runtime.api.invoke(COMPLETIONS_EVENT) for _ in range(16)]
        deadline = time.monotonic() + 60
        while not all(i.delivered_at for i in invocations):
            assert time.monotonic() < deadline, "the runtime did not take all 16 invocations"
            time.sleep(0.02)
        gate.set()
        for invocation in invocations:
            assert invocation.wait(60).prelude_and_body()[0]["statusCode"] == 200
    assert targets[read_at_init:] == [GET_SECRET]
