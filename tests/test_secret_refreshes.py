"""The re-read of the secret after the upstream refused its key (handler/credentials.py's
`refreshed`), against a fake Secrets Manager on loopback (tests/aws_fakes.py): a re-read that
fails while the value is within its TTL keeps the last good value, however short
SECRET_STALE_S is (the value is not stale yet); and a key still refused is read again once
MIN_SECRET_REFRESH_INTERVAL_S has passed, but not for a late 401 of a key replaced since; a
re-read that succeeds ends a failure remembered before it. A key from the environment is not
re-read, and a 401 for it is not retried. Serving the last good key is logged once per failed
read, not once per request served meanwhile."""

from __future__ import annotations

import asyncio
import json
from functools import partial

import httpx

from tests.aws_fakes import secret_store, secrets_manager_holding
from tests.conftest import TEST_KEY
from tests.helpers import run_coroutine

SECRET_ID = "relay/openai-refreshes"
ROTATED_KEY = "sk-test-refreshed-key-0123456789abcdef"


fake_aws = secrets_manager_holding(SECRET_ID)


store = partial(secret_store, SECRET_ID)


def test_a_failed_re_read_within_the_ttl_keeps_the_last_good_key(fake_aws, caplog):
    credentials = store(secret_stale_s=0.5)  # the TTL is the default 300 s

    async def refused_then_re_read_fails() -> str:
        rejected = await credentials.aget()
        fake_aws.fail_always = "AccessDeniedException"
        return (await credentials.refreshed(rejected)).api_key

    assert run_coroutine(refused_then_re_read_fails()) == TEST_KEY
    assert fake_aws.secret_reads() == 2
    # Said as a failed refresh is, with how long past its TTL the value is: not at all.
    stale = [r.getMessage() for r in caplog.records if "SecretServedStale" in r.getMessage()]
    assert [json.loads(line)["message"] for line in stale] == [
        "refreshing the secret failed; serving the last good value, 0 s past SECRET_TTL_S"
    ]


def test_a_re_read_that_succeeds_ends_the_failure_remembered_before_it(fake_aws):
    """A refresh fails (remembered for SECRET_RETRY_AFTER_S, the last good value serves), then
    the re-read after a 401 succeeds: once that value's TTL runs out, the next request reads
    the secret again, although the failure's retry interval has not run out."""
    credentials = store(secret_ttl_s=0.3, secret_retry_after_s=60)
    rotated_again = "sk-test-rotated-twice-0123456789abcdef"

    async def fail_then_recover() -> list[str]:
        first = await credentials.aget()
        await asyncio.sleep(0.4)  # past the TTL
        fake_aws.fail_always = "AccessDeniedException"
        stale = await credentials.aget()  # the refresh fails: the last good value
        fake_aws.fail_always = None
        fake_aws.secrets[SECRET_ID] = ROTATED_KEY
        refreshed = await credentials.refreshed(stale)  # a 401: read again, and it works
        fake_aws.secrets[SECRET_ID] = rotated_again
        await asyncio.sleep(0.4)  # past the TTL of the value read after the 401
        latest = await credentials.aget()
        return [first.api_key, stale.api_key, refreshed.api_key, latest.api_key]

    assert run_coroutine(fail_then_recover()) == [TEST_KEY, TEST_KEY, ROTATED_KEY, rotated_again]
    assert fake_aws.secret_reads() == 4


def test_a_key_still_refused_is_read_again_once_the_refresh_interval_has_passed(fake_aws):
    """And a late 401 for a key that has been replaced meanwhile needs no read at all: the
    value read since is the answer, however long ago that read was."""
    credentials = store()

    async def refused_again_and_again() -> list[str]:
        rejected = await credentials.aget()
        first = await credentials.refreshed(rejected)  # the same key: the secret did not change
        fake_aws.secrets[SECRET_ID] = ROTATED_KEY
        soon = await credentials.refreshed(first)  # within the interval: no read
        await asyncio.sleep(5.2)  # the contract's interval (docs/api.md): at most once per 5 s
        late = await credentials.refreshed(rejected)  # replaced by `first` already: no read
        later = await credentials.refreshed(first)
        return [first.api_key, soon.api_key, late.api_key, later.api_key]

    assert run_coroutine(refused_again_and_again()) == [TEST_KEY, TEST_KEY, TEST_KEY, ROTATED_KEY]
    assert fake_aws.secret_reads() == 3


def test_with_the_key_in_the_environment_a_refused_key_is_not_retried(upstream, make_relay, caplog):
    """OPENAI_API_KEY is not re-read: a 401 is the answer at once, with no second call, and
    the log does not speak of a secret being read."""
    relay = make_relay()  # the key from the environment, no secret
    upstream.accepted_keys = {"sk-some-other-key-0000000000"}
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, timeout=15)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_auth"
    assert len(upstream.requests) == 1
    assert not any("re-reading the secret" in r.getMessage() for r in caplog.records)


def test_serving_the_last_good_key_is_logged_once_per_failed_read_not_per_request(fake_aws, caplog):
    credentials = store(secret_ttl_s=0.2, secret_retry_after_s=30)

    async def requests_during_an_outage() -> list[str]:
        await credentials.aget()
        await asyncio.sleep(0.3)  # past the TTL
        fake_aws.fail_always = "AccessDeniedException"
        return [(await credentials.aget()).api_key for _ in range(3)]  # one read, remembered

    assert run_coroutine(requests_during_an_outage()) == [TEST_KEY] * 3
    assert fake_aws.secret_reads() == 2
    stale = [r.getMessage() for r in caplog.records if "SecretServedStale" in r.getMessage()]
    assert len(stale) == 1
