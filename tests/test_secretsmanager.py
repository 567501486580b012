"""The boto3-free `GetSecretValue` (handler/secretsmanager.py) reads moto's real server; its
signature is tested with DynamoDB's in test_aws.py."""

from __future__ import annotations

import pytest

from handler.aws import AwsEnvironment
from handler.secretsmanager import SecretReadFailed, get_secret_value


def test_reads_the_secret_and_names_a_missing_one(secrets, moto_endpoint):
    aws = AwsEnvironment("testing", "testing", None, "us-east-1", moto_endpoint)
    secrets.create_secret(Name="relay-test/direct", SecretString="sk-direct-read-0123456789")
    assert get_secret_value(aws, "relay-test/direct") == "sk-direct-read-0123456789"
    with pytest.raises(SecretReadFailed, match=r"^HTTP 4\d\d \(ResourceNotFoundException\)$"):
        get_secret_value(aws, "relay-test/absent")
