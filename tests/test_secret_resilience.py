"""A secret that survives a bad minute (handler/credentials.py over handler/aws.py), counted at a
fake Secrets Manager on loopback (tests/aws_fakes.py): a throttled read is retried, concurrent
readers of a cold cache share one call, init's read is adopted, a failed read is remembered for
SECRET_RETRY_AFTER_S, a failed refresh keeps the last good key for SECRET_STALE_S, and a
SnapStart restore signs with the container credentials it finds then."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from functools import partial

import pytest

from devtools.scripts import Script
from handler.credentials import CredentialStore, CredentialsUnavailable
from tests.aws_fakes import (
    ContainerCredentials,
    runtime_env_reading,
    secret_store,
    secrets_manager_holding,
)
from tests.conftest import TEST_KEY
from tests.helpers import run_coroutine
from tests.test_runtime_concurrency import DEFAULT_MODEL, completions_event

SECRET_ID = "relay/openai"
ROTATED_KEY = "sk-test-rotated-key-9876543210zyxwvu"


fake_aws = secrets_manager_holding(SECRET_ID)


store = partial(secret_store, SECRET_ID)


async def outcome(credentials: CredentialStore) -> str:
    """The key the store answers with, or `503`."""
    try:
        return (await credentials.aget()).api_key
    except CredentialsUnavailable:
        return "503"


def test_concurrent_readers_of_a_cold_cache_share_one_call(fake_aws):
    credentials = store()

    async def twenty_at_once() -> list[str]:
        return await asyncio.gather(*(outcome(credentials) for _ in range(20)))

    assert run_coroutine(twenty_at_once()) == [TEST_KEY] * 20
    assert fake_aws.secret_reads() == 1


def test_a_throttled_read_is_retried(fake_aws):
    fake_aws.script = deque(["ThrottlingException", 503])
    assert run_coroutine(outcome(store())) == TEST_KEY
    assert [c.code for c in fake_aws.targets("GetSecretValue")] == [
        "ThrottlingException",
        "InternalFailure",
        None,
    ]


def test_an_outage_costs_one_read_per_retry_interval_not_one_per_request(fake_aws, caplog):
    fake_aws.fail_always = 503
    credentials = store(secret_retry_after_s=0.5)

    async def requests_during_an_outage() -> list[str]:
        first = await asyncio.gather(*(outcome(credentials) for _ in range(10)))
        later = [await outcome(credentials) for _ in range(10)]  # within the interval
        return first + later

    assert run_coroutine(requests_during_an_outage()) == ["503"] * 20
    assert fake_aws.secret_reads() == 3  # one read: its three attempts
    time.sleep(0.6)
    fake_aws.fail_always = None
    assert run_coroutine(outcome(credentials)) == TEST_KEY  # after the interval: read again
    assert fake_aws.secret_reads() == 4
    assert any("after 3 attempts" in r.getMessage() for r in caplog.records)


def test_a_failed_refresh_keeps_the_last_good_key_for_secret_stale_s_then_503(fake_aws, caplog):
    credentials = store(secret_ttl_s=0.2, secret_retry_after_s=0.3, secret_stale_s=1.5)
    assert run_coroutine(outcome(credentials)) == TEST_KEY
    fake_aws.fail_always = 503
    time.sleep(0.3)  # past the TTL: the refresh fails, the last good key serves
    assert run_coroutine(outcome(credentials)) == TEST_KEY
    stale = [r.getMessage() for r in caplog.records if "SecretServedStale" in r.getMessage()]
    assert len(stale) == 1
    line = json.loads(stale[0])
    assert line["SecretServedStale"] == 1
    assert line["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "SecretServedStale", "Unit": "Count"}
    ]
    calls_then = fake_aws.secret_reads()
    assert run_coroutine(outcome(credentials)) == TEST_KEY  # remembered: no read, still served
    assert fake_aws.secret_reads() == calls_then
    time.sleep(1.6)  # past SECRET_STALE_S
    assert run_coroutine(outcome(credentials)) == "503"
    fake_aws.fail_always = None
    fake_aws.secrets[SECRET_ID] = ROTATED_KEY
    time.sleep(0.35)
    assert run_coroutine(outcome(credentials)) == ROTATED_KEY


def test_without_a_good_key_a_failed_read_is_503(fake_aws):
    fake_aws.fail_always = "AccessDeniedException"
    assert run_coroutine(outcome(store())) == "503"
    assert fake_aws.secret_reads() == 1  # an error that is an answer is not retried


@pytest.fixture
def start_on_fake_aws(start_runtime, fake_aws):
    """A runtime reading its key from the fake Secrets Manager, as on Lambda."""

    def start(**env: str):
        return start_runtime(**runtime_env_reading(fake_aws, SECRET_ID, **env))

    return start


def test_init_retries_a_throttled_read_and_the_runtime_adopts_it(
    start_on_fake_aws, fake_aws, upstream
):
    """One read at init (throttled once, then answered), none by the 8 concurrent invocations
    that follow: the runtime took over what init read."""
    fake_aws.script = deque(["ThrottlingException"])
    upstream.default = Script(tokens=["a ", "b"])
    runtime = start_on_fake_aws(AWS_LAMBDA_MAX_CONCURRENCY="8")
    invocations = [runtime.api.invoke(completions_event(DEFAULT_MODEL)) for _ in range(8)]
    for invocation in invocations:
        assert invocation.wait(60).prelude_and_body()[0]["statusCode"] == 200
    assert [c.code for c in fake_aws.targets("GetSecretValue")] == ["ThrottlingException", None]


def test_after_a_failed_init_read_concurrent_cold_invocations_share_one_read(
    start_on_fake_aws, fake_aws, upstream
):
    fake_aws.script = deque([503, 503, 503])  # init's three attempts
    upstream.default = Script(tokens=["a ", "b"])
    runtime = start_on_fake_aws(AWS_LAMBDA_MAX_CONCURRENCY="8")
    assert runtime.api.emulator.polled.wait(30)
    invocations = [runtime.api.invoke(completions_event(DEFAULT_MODEL)) for _ in range(8)]
    for invocation in invocations:
        assert invocation.wait(60).prelude_and_body()[0]["statusCode"] == 200
    assert [c.status for c in fake_aws.targets("GetSecretValue")] == [503, 503, 503, 200]


def test_a_snapstart_restore_signs_with_the_container_credentials_found_then(
    start_runtime, fake_aws, upstream, runtime_api
):
    """Before the snapshot the container endpoint serves one key; after the restore another,
    and the first is revoked. The secret (older than its TTL by then) is read again with the
    new key: the restore renewed the credential chain instead of keeping what it had cached."""
    container = ContainerCredentials().start()
    try:
        fake_aws.keys = {"CONTAINERKEY1": "container-secret-1", "CONTAINERKEY2": "secret-2"}
        start_runtime(
            OPENAI_API_KEY="",
            OPENAI_SECRET_ID=SECRET_ID,
            AWS_ENDPOINT_URL=fake_aws.url,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE="/nonexistent/config",
            AWS_SHARED_CREDENTIALS_FILE="/nonexistent/credentials",
            AWS_LAMBDA_INITIALIZATION_TYPE="snap-start",
            SECRET_TTL_S="1",
            **container.environment,
        )
        assert runtime_api.emulator.restore_waiting.wait(30)
        container.current = ("CONTAINERKEY2", "secret-2")
        del fake_aws.keys["CONTAINERKEY1"]
        fake_aws.secrets[SECRET_ID] = ROTATED_KEY
        time.sleep(1.2)  # on the shelf longer than the secret's TTL
        runtime_api.restore()
        invocation = runtime_api.invoke(completions_event(DEFAULT_MODEL)).wait(60)
        assert invocation.prelude_and_body()[0]["statusCode"] == 200
    finally:
        container.stop()
    assert [(c.access_key, c.status) for c in fake_aws.targets("GetSecretValue")] == [
        ("CONTAINERKEY1", 200),
        ("CONTAINERKEY2", 200),
    ]
    chats = [r for r in upstream.requests if r.method == "POST"]
    assert chats[0].headers["authorization"] == f"Bearer {ROTATED_KEY}"
