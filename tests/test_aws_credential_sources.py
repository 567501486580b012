"""A laptop's credential sources for the relay's AWS calls (handler/aws.py's `CredentialChain`): a
named profile's keys (the CRT's chain), signing `GetSecretValue` at the fake AWS endpoint
(tests/aws_fakes.py). No keys in the environment, no container credentials, no instance metadata;
nothing beyond loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.aws import AwsEnvironment, AwsJsonClient, CredentialChain
from handler.secretsmanager import GET_SECRET_VALUE, SECRETS_MANAGER
from tests.aws_fakes import FakeAws
from tests.helpers import run_coroutine

SECRET = {"relay": "the-relay-secret"}


@pytest.fixture
def fake_aws():
    fake = FakeAws(secrets=dict(SECRET)).start()
    yield fake
    fake.stop()


@pytest.fixture
def laptop(monkeypatch, tmp_path) -> Path:
    """A laptop's environment with its home in `tmp_path`: `~/.aws/config` and
    `~/.aws/credentials` (empty until a test writes them), no keys or container credentials in
    the environment, instance metadata off."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "config").write_text("")
    (aws / "credentials").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


def test_a_named_profiles_keys_sign_the_secret_read_through_the_crts_chain(
    fake_aws, laptop, monkeypatch
):
    """`AWS_PROFILE=dev` picks the `dev` profile's keys over the default profile's; the CRT's own
    chain finds them, so botocore is never asked."""
    (laptop / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = default-secret\n\n"
        "[dev]\naws_access_key_id = PROFILEKEY\naws_secret_access_key = profile-secret\n"
    )
    (laptop / ".aws" / "config").write_text("[profile dev]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_PROFILE", "dev")
    fake_aws.keys = {"PROFILEKEY": "profile-secret"}  # the fake checks the signature with it
    chain = CredentialChain()
    client = AwsJsonClient(
        SECRETS_MANAGER, AwsEnvironment("us-east-1", fake_aws.url), pooled=False, credentials=chain
    )
    answer = run_coroutine(client.call(GET_SECRET_VALUE, {"SecretId": "relay"}))
    assert answer == {"SecretString": SECRET["relay"]}
    assert [(c.access_key, c.session_token, c.status) for c in fake_aws.calls] == [
        ("PROFILEKEY", None, 200)
    ]
    assert chain.sdk_only is False
