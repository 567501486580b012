"""The AWS client's retries, clock-skew correction and credential renewal (handler/aws.py),
against a fake AWS endpoint on loopback that checks every signature and throttles, fails, drops
or recovers on command (tests/aws_fakes.py): counted at the fake, nothing patched."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import pytest

from handler.aws import MAX_ATTEMPTS, AwsCallFailed, AwsEnvironment, AwsJsonClient, CredentialChain
from handler.dynamodb import UPDATE_ITEM, DynamoDB, DynamoDBFailed, dynamodb_service
from tests.aws_fakes import ContainerCredentials, FakeAws
from tests.helpers import run_coroutine
from tests.test_quota import dead_endpoint

ITEM = {"TableName": "quota", "Key": {"pk": {"S": "quota#x"}}}


@pytest.fixture
def fake_aws():
    fake = FakeAws().start()
    yield fake
    fake.stop()


@pytest.fixture
def container(monkeypatch):
    """Container credentials as the only source: the environment's keys are gone (as after a
    SnapStart restore, or on ECS), and so are profiles."""
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


def client_of(url: str, budget_s: float = 3.0, **kwargs) -> AwsJsonClient:
    return AwsJsonClient(
        dynamodb_service(1.0, 1.0, budget_s), AwsEnvironment("us-east-1", url), **kwargs
    )


def calls(client: AwsJsonClient, count: int = 1) -> list[str]:
    """`count` UpdateItems in turn: `ok`, or the failure's message."""

    async def run() -> list[str]:
        outcomes = []
        for _ in range(count):
            try:
                await client.call(UPDATE_ITEM, ITEM)
                outcomes.append("ok")
            except AwsCallFailed as exc:
                outcomes.append(str(exc))
        await client.close()
        return outcomes

    return run_coroutine(run())


@pytest.mark.parametrize(
    "throttle",
    ["ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded"],
)
def test_a_throttled_call_is_retried_and_succeeds(fake_aws, throttle):
    fake_aws.script = deque([throttle, throttle])
    assert calls(client_of(fake_aws.url)) == ["ok"]
    assert [c.code for c in fake_aws.calls] == [throttle, throttle, None]


def test_5xx_and_a_dropped_connection_are_retried(fake_aws):
    fake_aws.script = deque([503, "drop"])
    assert calls(client_of(fake_aws.url)) == ["ok"]
    assert [c.status for c in fake_aws.calls] == [503, 0, 200]


def test_a_5xx_storm_costs_three_attempts_per_call_until_the_retry_quota_stops_retries(fake_aws):
    """Each call tries 3 times; once the quota (500 tokens, 5 a retry) is spent, a call that
    fails is not retried, so a storm is not tripled; one success returns a token."""
    fake_aws.fail_always = 500
    client = client_of(fake_aws.url)
    first = calls(client)
    assert first[0].startswith("HTTP 500 (InternalFailure), after 3 attempts")
    assert len(fake_aws.calls) == MAX_ATTEMPTS
    calls(client, 49)  # 50 calls, 100 retries: the quota is spent
    assert len(fake_aws.calls) == 50 * MAX_ATTEMPTS
    [spent] = calls(client)
    assert "the retry quota is spent" in spent
    assert len(fake_aws.calls) == 50 * MAX_ATTEMPTS + 1
    # The storm ends; each success returns a token, and a retry takes five.
    fake_aws.fail_always = None
    assert calls(client, 4) == ["ok"] * 4
    fake_aws.fail_always = 500
    before = len(fake_aws.calls)
    assert "the retry quota is spent" in calls(client)[0]
    assert len(fake_aws.calls) == before + 1  # four tokens: no retry
    fake_aws.fail_always = None
    assert calls(client) == ["ok"]
    fake_aws.fail_always = 500
    before = len(fake_aws.calls)
    assert "the retry quota is spent" in calls(client)[0]
    assert len(fake_aws.calls) == before + 2  # five: one retry


def test_a_client_error_is_an_answer_not_retried(fake_aws):
    fake_aws.script = deque(["ValidationException"])
    [outcome] = calls(client_of(fake_aws.url))
    assert outcome == "HTTP 400 (ValidationException)"
    assert len(fake_aws.calls) == 1


def test_an_unreachable_endpoint_fails_after_three_attempts():
    [outcome] = calls(client_of(dead_endpoint()))
    assert outcome.startswith("ClientConnectorError reaching DynamoDB")
    assert outcome.endswith("after 3 attempts")


def test_all_attempts_end_within_the_calls_budget(fake_aws):
    """Throttled without end and given 0.1 s: a pause that would not fit is not taken. With
    pauses of up to 1000 s, one that fits in 0.1 s is drawn once in ten thousand calls."""
    fake_aws.fail_always = "ThrottlingException"
    slow_backoff = replace(dynamodb_service(1.0, 1.0, 0.1), base_backoff_s=1000.0)
    client = AwsJsonClient(slow_backoff, AwsEnvironment("us-east-1", fake_aws.url))
    [outcome] = calls(client)
    assert outcome == "HTTP 400 (ThrottlingException); no time left for another attempt"


def test_a_skewed_clock_is_corrected_from_the_answers_date_once(fake_aws):
    fake_aws.clock_offset_s = 3600.0  # AWS's clock an hour ahead of ours
    client = client_of(fake_aws.url)
    assert calls(client, 2) == ["ok", "ok"]
    # The first signature was refused for its time; every later one uses the service's time.
    assert [c.code for c in fake_aws.calls] == ["InvalidSignatureException", None, None]


def test_quota_failures_name_their_cause_and_conditions_are_answers(fake_aws):
    fake_aws.fail_always = 503
    dynamodb = DynamoDB(AwsEnvironment("us-east-1", fake_aws.url), 1.0, 1.0)

    async def admit() -> str:
        try:
            await dynamodb.update_item(ITEM)
        except DynamoDBFailed as exc:
            return str(exc)
        finally:
            await dynamodb.close()
        return "ok"

    assert run_coroutine(admit()) == "HTTP 503 (InternalFailure), after 3 attempts"


def test_container_credentials_sign_and_an_expired_token_renews_them(fake_aws, container):
    """No keys in the environment: the chain fetches the container's credentials. When AWS
    answers ExpiredTokenException the client renews the chain once and signs again with the
    credentials the endpoint serves now."""
    fake_aws.keys = {"CONTAINERKEY1": "container-secret-1", "CONTAINERKEY2": "container-secret-2"}
    chain = CredentialChain()
    client = client_of(fake_aws.url, credentials=chain)
    assert calls(client) == ["ok"]
    assert [c.access_key for c in fake_aws.calls] == ["CONTAINERKEY1"]
    fake_aws.expired.add("CONTAINERKEY1")
    container.current = ("CONTAINERKEY2", "container-secret-2")
    assert calls(client) == ["ok"]
    assert [(c.access_key, c.code) for c in fake_aws.calls[1:]] == [
        ("CONTAINERKEY1", "ExpiredTokenException"),
        ("CONTAINERKEY2", None),
    ]
    assert chain.sdk_only is False  # the CRT's chain signs still, not botocore's


def test_credentials_still_expired_after_the_renewal_fail_the_call(fake_aws, container):
    """The chain is renewed once per call: when the container serves the expired key again,
    the call fails with AWS's answer instead of renewing until its budget ends."""
    fake_aws.keys = {"CONTAINERKEY1": "container-secret-1"}
    fake_aws.expired.add("CONTAINERKEY1")
    client = client_of(fake_aws.url, credentials=CredentialChain())
    assert calls(client) == ["HTTP 400 (ExpiredTokenException)"]
    assert [(c.access_key, c.code) for c in fake_aws.calls] == [
        ("CONTAINERKEY1", "ExpiredTokenException"),
        ("CONTAINERKEY1", "ExpiredTokenException"),
    ]


def test_credentials_about_to_expire_are_fetched_again_before_signing(fake_aws, container):
    """Credentials that expire within seconds are not reused: the chain asks the endpoint again,
    so a rotation there reaches the next signature without a refused call."""
    fake_aws.keys = {"CONTAINERKEY1": "container-secret-1", "CONTAINERKEY2": "container-secret-2"}
    container.lifetime_s = 3
    client = client_of(fake_aws.url, credentials=CredentialChain())
    assert calls(client) == ["ok"]
    container.current = ("CONTAINERKEY2", "container-secret-2")
    fake_aws.keys.pop("CONTAINERKEY1")
    assert calls(client) == ["ok"]
    assert [(c.access_key, c.code) for c in fake_aws.calls] == [
        ("CONTAINERKEY1", None),
        ("CONTAINERKEY2", None),
    ]


def test_without_credentials_anywhere_the_call_fails_unsigned(fake_aws, container):
    container.token = "another-token"  # the endpoint refuses the process's token
    [outcome] = calls(client_of(fake_aws.url, credentials=CredentialChain()))
    assert outcome.startswith("no AWS credentials to sign with: AWS_")
    # The environment names the container's credentials: botocore is not asked to find others.
    assert "botocore" not in outcome
    assert fake_aws.calls == []
