"""A laptop's credential sources for the relay's AWS calls (handler/aws.py's `CredentialChain`): a
named profile's keys (the CRT's chain) and an SSO login (botocore's chain, where the CRT has no SSO
provider), each signing `GetSecretValue` at the fake AWS endpoint (tests/aws_fakes.py). No keys in
the environment, no container credentials, no instance metadata; nothing beyond loopback."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from handler.aws import AwsEnvironment, AwsJsonClient, CredentialChain
from handler.secretsmanager import GET_SECRET_VALUE, SECRETS_MANAGER
from tests.aws_fakes import FakeAws, SsoPortal
from tests.helpers import run_coroutine

ROOT = Path(__file__).resolve().parent.parent
SECRET = {"relay": "the-relay-secret"}


@pytest.fixture
def fake_aws():
    fake = FakeAws(secrets=dict(SECRET)).start()
    yield fake
    fake.stop()


@pytest.fixture
def sso_portal():
    portal = SsoPortal().start()
    yield portal
    portal.stop()


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


def read_with_a_new_chain(fake_aws: FakeAws) -> None:
    client = AwsJsonClient(
        SECRETS_MANAGER,
        AwsEnvironment("us-east-1", fake_aws.url),
        pooled=False,
        credentials=CredentialChain(),
    )
    answer = run_coroutine(client.call(GET_SECRET_VALUE, {"SecretId": "relay"}))
    assert answer == {"SecretString": SECRET["relay"]}


def test_keys_in_the_environment_sign_before_a_profiles_as_in_the_sdks_chain(
    fake_aws, laptop, monkeypatch
):
    """Lambda's case: the environment names both keys, so they sign (session token included),
    though the default profile has keys of its own."""
    (laptop / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = PROFILEKEY\naws_secret_access_key = profile-secret\n"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-session")
    fake_aws.keys = {"ENVKEY": "env-secret", "PROFILEKEY": "profile-secret"}
    read_with_a_new_chain(fake_aws)
    assert [(c.access_key, c.session_token, c.status) for c in fake_aws.calls] == [
        ("ENVKEY", "env-session", 200)
    ]


def test_an_access_key_without_its_secret_in_the_environment_leaves_it_to_the_chain(
    fake_aws, laptop, monkeypatch
):
    """Half a pair of keys is not the environment's answer: the chain goes on to the profile."""
    (laptop / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = PROFILEKEY\naws_secret_access_key = profile-secret\n"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    fake_aws.keys = {"PROFILEKEY": "profile-secret"}
    read_with_a_new_chain(fake_aws)
    assert [(c.access_key, c.status) for c in fake_aws.calls] == [("PROFILEKEY", 200)]


# Bytes the process has read (/proc/self/io's rchar) while it builds the credentials provider.
BYTES_READ_BUILDING_THE_PROVIDER = """
import awscrt.auth, awscrt.io
from handler.aws import CREDENTIALS

def read_so_far():
    with open("/proc/self/io") as io:
        return int(next(line for line in io if line.startswith("rchar:")).split()[1])

before = read_so_far()
CREDENTIALS.provider()
print(read_so_far() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/self/io")
@pytest.mark.parametrize("keys_in_the_environment", [True, False])
def test_with_keys_in_the_environment_no_ca_store_is_parsed_for_the_chains_remote_links(
    laptop, keys_in_the_environment
):
    """Building the SDKs' default chain builds a TLS context for its remote links (container
    credentials, instance metadata, STS), and so reads the system's CA store twice, ~11 ms of
    CPU under the GIL in init's secret read. Where the environment's keys are the chain's answer
    the relay builds the environment's provider alone, which reads nothing."""
    keys = {"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "env-secret"}
    output = run_on_the_laptop(
        BYTES_READ_BUILDING_THE_PROVIDER, keys if keys_in_the_environment else {}
    )
    read = int(output.split()[-1])
    if keys_in_the_environment:
        assert read < 4096
    else:  # the check above can fail: the chain reads the store (well over 100 KB here)
        assert read > 100_000


SSO_SESSION = "corp"


def sso_login(home: Path, expires_in: datetime.timedelta, token: str) -> None:
    """What `aws configure sso` and `aws sso login --profile dev` leave behind: a profile naming
    an sso-session, and the session's access token in botocore's cache, under the SHA-1 of the
    session's name."""
    (home / ".aws" / "config").write_text(
        "[profile dev]\n"
        f"sso_session = {SSO_SESSION}\n"
        "sso_account_id = 111122223333\n"
        "sso_role_name = Developer\n"
        "region = us-east-1\n\n"
        f"[sso-session {SSO_SESSION}]\n"
        "sso_region = us-east-1\n"
        "sso_start_url = https://corp.awsapps.com/start\n"
        "sso_registration_scopes = sso:account:access\n"
    )
    cache = home / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    expires_at = datetime.datetime.now(datetime.UTC) + expires_in
    (cache / f"{hashlib.sha1(SSO_SESSION.encode()).hexdigest()}.json").write_text(
        json.dumps(
            {
                "startUrl": "https://corp.awsapps.com/start",
                "region": "us-east-1",
                "accessToken": token,
                "expiresAt": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    )


# The relay's own secret read in a process of the laptop's: botocore fixes the SSO token cache's
# directory from HOME when it is imported, which in this process happened before any test ran.
READ_THE_SECRET = """
import asyncio, json, sys
from handler.aws import CREDENTIALS, AwsEnvironment
from handler.secretsmanager import SecretReadFailed, SecretsManager

async def read(times):
    secrets = SecretsManager(AwsEnvironment("us-east-1", sys.argv[1]))
    values = []
    for _ in range(times):
        try:
            values.append(await secrets.get_secret_value("relay"))
        except SecretReadFailed as exc:
            values.append(f"failed: {exc}")
    return values

print(json.dumps({"values": asyncio.run(read(int(sys.argv[2]))), "sdk_only": CREDENTIALS.sdk_only}))
"""


def read_the_secret_on_the_laptop(fake_aws: FakeAws, sso_portal: SsoPortal, times: int = 1) -> dict:
    """`times` secret reads, one after the other, in a new process of the laptop's."""
    env = {"AWS_PROFILE": "dev", "AWS_ENDPOINT_URL_SSO": sso_portal.url}
    output = run_on_the_laptop(READ_THE_SECRET, env, fake_aws.url, str(times))
    return json.loads(output.splitlines()[-1])


def run_on_the_laptop(code: str, env: dict[str, str], *args: str) -> str:
    """`code`'s standard output, run in a new process of the laptop's with `env` added."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_an_sso_login_signs_the_secret_read_with_the_roles_credentials(
    fake_aws, sso_portal, laptop
):
    """The CRT's chain finds nothing in an SSO profile; botocore's chain then trades the cached
    SSO token for the role's credentials at the portal (`AWS_ENDPOINT_URL_SSO`), and those sign
    the call, session token included."""
    sso_login(laptop, datetime.timedelta(hours=1), sso_portal.token)
    key, secret, session_token = sso_portal.current
    fake_aws.keys = {key: secret}
    outcome = read_the_secret_on_the_laptop(fake_aws, sso_portal)
    assert outcome == {"values": [SECRET["relay"]], "sdk_only": True}
    assert sso_portal.requests == [
        ({"role_name": ["Developer"], "account_id": ["111122223333"]}, sso_portal.token)
    ]
    assert [(c.access_key, c.session_token, c.status) for c in fake_aws.calls] == [
        (key, session_token, 200)
    ]


def test_an_expired_sso_login_fails_the_secret_read_naming_botocores_error(
    fake_aws, sso_portal, laptop
):
    """A token past its `expiresAt` (and no refresh token) is not sent to the portal: the read
    fails without a signature, and says where each chain stopped."""
    sso_login(laptop, -datetime.timedelta(minutes=5), sso_portal.token)
    outcome = read_the_secret_on_the_laptop(fake_aws, sso_portal)
    assert outcome["sdk_only"] is False
    [failure] = outcome["values"]
    assert failure.startswith("failed: no AWS credentials to sign with: AWS_AUTH_")
    assert failure.endswith("; botocore: TokenRetrievalError")
    assert sso_portal.token not in failure
    assert sso_portal.requests == []
    assert fake_aws.calls == []


def test_sso_role_credentials_about_to_expire_are_fetched_again_before_signing(
    fake_aws, sso_portal, laptop
):
    """Role credentials that expire within botocore's refresh window (10 minutes) are not reused:
    each read asks the portal again, so a laptop's long-running relay outlives its role's
    credentials as long as the SSO login lasts."""
    sso_login(laptop, datetime.timedelta(hours=1), sso_portal.token)
    sso_portal.lifetime_s = 120
    key, secret, session_token = sso_portal.current
    fake_aws.keys = {key: secret}
    outcome = read_the_secret_on_the_laptop(fake_aws, sso_portal, times=2)
    assert outcome == {"values": [SECRET["relay"]] * 2, "sdk_only": True}
    assert len(sso_portal.requests) == 2
    assert [(c.access_key, c.session_token) for c in fake_aws.calls] == [(key, session_token)] * 2
