"""Shared fixtures: the fake OpenAI upstream, moto's Secrets Manager server, the relay on uvicorn.

Everything runs on loopback; nothing here reaches AWS or OpenAI.
"""

from __future__ import annotations

import logging
import os
import re
import uuid

import pytest

from handler.settings import Settings  # importing it reads no environment

# Hermetic: a developer's own keys or relay settings must not leak into the tests. Every
# variable `Settings` reads is cleared, whatever fields it gains, and AWS's and OpenAI's own.
_SETTINGS_VARIABLES = {name.upper() for name in Settings.model_fields}
for _name in list(os.environ):
    if _name.startswith(("OPENAI_", "AWS_")) or _name.upper() in _SETTINGS_VARIABLES:
        del os.environ[_name]
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
)

from devtools.moto_server import start_moto_server  # noqa: E402
from devtools.openai_server import OpenAICompatibleServer  # noqa: E402
from tests.browser import browser, page  # noqa: E402, F401  (the page tests' fixtures)
from tests.relay_server import RelayServer  # noqa: E402
from tests.runtime_process import runtime_api, start_runtime  # noqa: E402, F401  (fixtures)

TEST_KEY = "sk-test-relay-key-0123456789abcdefABCDEF"
# Every OpenAI key and client token the tests use matches this; no log line may.
SENSITIVE = re.compile(r"sk-[A-Za-z0-9_-]{12,}|client-token|second-token-xyz")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that drives Chromium is a `browser` test (`make test-fast` skips them)."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


# Skips CI accepts, as (node id prefix, why). Empty: CI machines have everything the suite
# needs (python3.13, writable cgroups, Chromium, Node), so in CI every collected test runs and a
# skip means a check silently stopped checking.
EXPECTED_SKIPS_IN_CI: tuple[tuple[str, str], ...] = ()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


_skipped_reports: list[tuple[str, str]] = []  # (node id, reason) of every skipped test


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped_reports.append((report.nodeid, reason))


def _unexpected(skips: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        (nodeid, reason)
        for nodeid, reason in skips
        if not any(nodeid.startswith(prefix) for prefix, _ in EXPECTED_SKIPS_IN_CI)
    ]


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    skips = _skipped_reports
    unexpected = _unexpected(skips)
    terminalreporter.write_line(
        f"skipped: {len(skips)} ({len(skips) - len(unexpected)} on the CI allow-list)"
    )
    if in_ci() and unexpected:
        terminalreporter.write_line("CI fails on these skips (tests/conftest.py):", red=True)
        for nodeid, reason in unexpected:
            terminalreporter.write_line(f"  {nodeid}: {reason}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if in_ci() and _unexpected(_skipped_reports) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def no_secret_in_any_log_line(caplog):
    """Whatever a test does, no captured log line carries a key or a client token."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        match = SENSITIVE.search(text)
        assert match is None, f"{record.name} logged a secret: {text!r}"


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's standalone server as the local Secrets Manager (the same one `make dev` uses)."""
    server, endpoint = start_moto_server()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    yield endpoint
    server.stop()
    os.environ.pop("AWS_ENDPOINT_URL", None)


@pytest.fixture
def secrets(moto_endpoint):
    """A boto3 Secrets Manager client on moto; secrets it creates are deleted after the test."""
    import boto3

    client = boto3.client("secretsmanager", endpoint_url=moto_endpoint, region_name="us-east-1")
    created: list[str] = []
    original = client.create_secret

    def create_secret(**kwargs):
        created.append(kwargs["Name"])
        return original(**kwargs)

    client.create_secret = create_secret
    yield client
    for name in created:
        client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


@pytest.fixture
def upstream():
    """The fake OpenAI on a loopback port; tests `enqueue` scripts and read `requests`."""
    server = OpenAICompatibleServer().serve_in_thread()
    yield server
    server.stop()


@pytest.fixture
def make_relay(upstream):
    """Start a relay on uvicorn with these settings (default: the fake upstream, a test key,
    and anonymous callers explicitly allowed: access is not what most tests are about)."""
    started: list[RelayServer] = []

    def start(**overrides) -> RelayServer:
        values = {
            "openai_api_key": TEST_KEY,
            "openai_base_url": upstream.base_url,
            "allow_anonymous": True,
        }
        values.update(overrides)
        server = RelayServer(Settings(_env_file=None, **values)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def issuer():
    """An OIDC issuer on loopback with a real RSA key (`rsa-1`) and EC key (`ec-1`)."""
    from devtools.oidc_issuer import OidcIssuer

    issuer = OidcIssuer().start()
    issuer.add_key("rsa-1", "RSA")
    issuer.add_key("ec-1", "EC")
    yield issuer
    issuer.stop()


@pytest.fixture
def relay(make_relay):
    return make_relay()


@pytest.fixture
def dynamodb(moto_endpoint):
    """A boto3 DynamoDB client of moto's server, to look at the quota items the relay wrote."""
    import boto3

    return boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def quota_table(moto_endpoint, dynamodb):
    """A fresh table shaped like the template's (pk string, TTL on expires_at)."""
    from devtools.moto_server import create_quota_table

    name = create_quota_table(moto_endpoint, f"quota-{uuid.uuid4().hex[:8]}")
    yield name
    dynamodb.delete_table(TableName=name)


@pytest.fixture
def signin_relay(make_relay, issuer):
    """A relay whose only access method is sign-in with `issuer`'s tokens for `relay-app`."""

    def start(**overrides):
        values = {
            "allow_anonymous": False,
            "jwt_issuer": issuer.issuer,
            "jwt_audience": "relay-app",
        }
        return make_relay(**{**values, **overrides})

    return start
