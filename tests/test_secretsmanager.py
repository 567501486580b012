"""The boto3-free `GetSecretValue` (handler/secretsmanager.py): its SigV4 signature is the one
botocore computes for the same request, and it reads moto's real server."""

from __future__ import annotations

import re

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from handler.secretsmanager import (
    AwsEnvironment,
    SecretReadFailed,
    get_secret_value,
    signed_headers,
)

AWS = AwsEnvironment(
    access_key_id="AKIDEXAMPLE",
    secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    session_token="session-token-example",
    region="eu-west-1",
)


def test_signature_matches_botocore():
    body = b'{"SecretId": "relay/openai"}'
    host = "secretsmanager.eu-west-1.amazonaws.com"
    headers = signed_headers(AWS, host, body)
    ours = re.search(r"Signature=([0-9a-f]{64})", headers["authorization"]).group(1)

    request = AWSRequest("POST", f"https://{host}/", data=body, headers=dict(headers))
    del request.headers["authorization"]
    request.context["timestamp"] = headers["x-amz-date"]
    credentials = Credentials(AWS.access_key_id, AWS.secret_access_key, AWS.session_token)
    signer = SigV4Auth(credentials, "secretsmanager", "eu-west-1")
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    assert ours == expected
    assert "x-amz-security-token" in headers["authorization"]


def test_reads_the_secret_and_names_a_missing_one(secrets, moto_endpoint):
    aws = AwsEnvironment("testing", "testing", None, "us-east-1", moto_endpoint)
    secrets.create_secret(Name="relay-test/direct", SecretString="sk-direct-read-0123456789")
    assert get_secret_value(aws, "relay-test/direct") == "sk-direct-read-0123456789"
    with pytest.raises(SecretReadFailed, match=r"^HTTP 4\d\d \(ResourceNotFoundException\)$"):
        get_secret_value(aws, "relay-test/absent")
