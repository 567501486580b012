"""`GetSecretValue` (handler/secretsmanager.py) against moto's real server: awscrt signs with
the process's credential chain (the test session's environment keys), aiohttp carries it."""

from __future__ import annotations

import pytest

from handler.aws import AwsEnvironment
from handler.secretsmanager import SecretReadFailed, SecretsManager
from tests.helpers import run_coroutine


def test_reads_the_secret_and_names_a_missing_one(secrets, moto_endpoint):
    client = SecretsManager(AwsEnvironment(region="us-east-1", endpoint_url=moto_endpoint))
    secrets.create_secret(Name="relay-test/direct", SecretString="sk-direct-read-0123456789")
    value = run_coroutine(client.get_secret_value("relay-test/direct"))
    assert value == "sk-direct-read-0123456789"
    with pytest.raises(SecretReadFailed, match=r"^HTTP 4\d\d \(ResourceNotFoundException\)$"):
        run_coroutine(client.get_secret_value("relay-test/absent"))
