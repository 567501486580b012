"""The SDK-free AWS calls' signature (handler/aws.py): for both services the relay calls, with
and without a session token, it is the SigV4 signature botocore computes for the same request."""

from __future__ import annotations

import datetime
import re

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from handler.aws import AwsEnvironment, JsonApi, error_code
from handler.dynamodb import DYNAMODB, UPDATE_ITEM
from handler.secretsmanager import SECRETS_MANAGER

# AWS's documented example keys (the SigV4 test suite's).
KEYS = {
    "access_key_id": "AKIDEXAMPLE",
    "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}
CALLS = [
    (SECRETS_MANAGER, "secretsmanager.GetSecretValue", b'{"SecretId": "relay/openai"}'),
    (DYNAMODB, UPDATE_ITEM, b'{"TableName": "quota", "Key": {"pk": {"S": "quota#x"}}}'),
]


def botocore_signature(
    aws: AwsEnvironment, service: str, host: str, headers: dict[str, str], body: bytes
) -> str:
    """The signature botocore's SigV4Auth gives the same request at the same moment."""
    request = AWSRequest("POST", f"https://{host}/", data=body, headers=dict(headers))
    del request.headers["authorization"]
    request.context["timestamp"] = headers["x-amz-date"]
    credentials = Credentials(aws.access_key_id, aws.secret_access_key, aws.session_token)
    signer = SigV4Auth(credentials, service, aws.region)
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)


@pytest.mark.parametrize("session_token", [None, "session-token-example"])
@pytest.mark.parametrize(("api", "target", "body"), CALLS, ids=lambda v: getattr(v, "service", ""))
def test_signature_matches_botocore(api: JsonApi, target: str, body: bytes, session_token):
    aws = AwsEnvironment(**KEYS, session_token=session_token, region="eu-west-1")
    host = f"{api.service}.eu-west-1.amazonaws.com"
    at = datetime.datetime(2026, 11, 25, 23, 59, 59, tzinfo=datetime.UTC)
    headers = api.signed_headers(aws, host, target, body, now=at)
    ours = re.search(r"Signature=([0-9a-f]{64})", headers["authorization"]).group(1)
    assert ours == botocore_signature(aws, api.service, host, headers, body)
    assert headers["x-amz-date"] == "20261125T235959Z"
    assert (
        f"Credential=AKIDEXAMPLE/20261125/eu-west-1/{api.service}/aws4_request"
        in (headers["authorization"])
    )
    assert ("x-amz-security-token" in headers["authorization"]) is bool(session_token)
    assert headers["content-type"] == api.content_type and headers["x-amz-target"] == target


def test_another_body_or_moment_is_another_signature():
    aws = AwsEnvironment(**KEYS, region="us-east-1")
    at = datetime.datetime(2026, 11, 25, 12, tzinfo=datetime.UTC)
    host = "dynamodb.us-east-1.amazonaws.com"
    one = DYNAMODB.signed_headers(aws, host, UPDATE_ITEM, b"{}", now=at)["authorization"]
    other = DYNAMODB.signed_headers(aws, host, UPDATE_ITEM, b"{ }", now=at)["authorization"]
    later = DYNAMODB.signed_headers(
        aws, host, UPDATE_ITEM, b"{}", now=at + datetime.timedelta(seconds=1)
    )["authorization"]
    assert len({one, other, later}) == 3


def test_endpoints_follow_the_region_unless_one_is_set():
    assert DYNAMODB.endpoint(AwsEnvironment(region="eu-west-1")) == (
        "https://dynamodb.eu-west-1.amazonaws.com"
    )
    assert SECRETS_MANAGER.endpoint(AwsEnvironment(region="cn-north-1")) == (
        "https://secretsmanager.cn-north-1.amazonaws.com.cn"
    )
    local = AwsEnvironment(region="us-east-1", endpoint_url="http://127.0.0.1:5000")
    assert DYNAMODB.endpoint(local) == "http://127.0.0.1:5000"


def test_error_code_is_the_last_part_of_type():
    prefix = b'{"__type": "com.amazonaws.dynamodb.v20120810#'
    assert error_code(prefix + b'ConditionalCheckFailedException"}') == (
        "ConditionalCheckFailedException"
    )
    assert error_code(b'{"__type": "ResourceNotFoundException"}') == "ResourceNotFoundException"
    assert error_code(b"<html>") == "unreadable error"
    assert error_code(b"{}") == "no error code"
