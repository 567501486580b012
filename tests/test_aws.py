"""The AWS calls' signature and endpoints (handler/aws.py): awscrt's SigV4 signature of both
calls is the one botocore computes for the same request, and the endpoint of every partition and
variant is the one botocore's endpoint rules give."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import botocore
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.endpoint_provider import EndpointProvider

from handler.aws import PARTITIONS, AwsEnvironment, AwsJsonClient, error_code, regional_endpoint
from handler.dynamodb import UPDATE_ITEM, dynamodb_service
from handler.secretsmanager import GET_SECRET_VALUE, SECRETS_MANAGER
from tests.helpers import run_coroutine

BOTOCORE_DATA = Path(botocore.__file__).parent / "data"
CALLS = [
    (SECRETS_MANAGER, GET_SECRET_VALUE, {"SecretId": "relay/openai"}),
    (dynamodb_service(1, 2, 3), UPDATE_ITEM, {"TableName": "quota", "Key": {"pk": {"S": "q#x"}}}),
]


def signed_by_awscrt(service, target: str, request: dict, url: str) -> dict[str, str]:
    client = AwsJsonClient(service, AwsEnvironment(region="eu-west-1", endpoint_url=url))
    return dict(run_coroutine(client._signed(target, json.dumps(request).encode())))


@pytest.mark.parametrize(("service", "target", "request_body"), CALLS, ids=["secrets", "dynamodb"])
@pytest.mark.parametrize("url", ["https://example.amazonaws.com", "http://127.0.0.1:5000/aws/"])
def test_signature_is_the_one_botocore_computes(service, target, request_body, url):
    """The test session's environment keys (the chain's first source) sign; botocore, given the
    same keys, headers and moment, computes the same signature."""
    headers = signed_by_awscrt(service, target, request_body, url)
    body = json.dumps(request_body).encode()
    request = AWSRequest(
        "POST",
        url,
        data=body,
        headers={k: v for k, v in headers.items() if k.lower() not in ("authorization",)},
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials("testing", "testing"), service.name, "eu-west-1")
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    assert re.search(r"Signature=([0-9a-f]{64})", headers["Authorization"])[1] == expected
    assert (
        f"Credential=testing/{headers['X-Amz-Date'][:8]}/eu-west-1/{service.name}/"
        in (headers["Authorization"])
    )


def test_partitions_are_botocores():
    data = json.loads((BOTOCORE_DATA / "partitions.json").read_text())
    theirs = {
        (p["id"], p["regionRegex"], p["outputs"]["dnsSuffix"], p["outputs"]["dualStackDnsSuffix"])
        for p in data["partitions"]
    }
    assert set(PARTITIONS) == theirs


REGIONS = [
    "us-east-1",
    "eu-west-1",
    "ap-southeast-5",
    "cn-north-1",
    "us-gov-west-1",
    "us-gov-east-1",
    "us-iso-east-1",
    "us-isob-east-1",
    "eu-isoe-west-1",
    "us-isof-south-1",
    "eusc-de-east-1",
    "xx-nowhere-1",
]


@pytest.mark.parametrize(
    ("service", "version"), [("secretsmanager", "2017-10-17"), ("dynamodb", "2012-08-10")]
)
def test_regional_endpoints_are_the_ones_botocores_rules_give(service, version):
    rules = json.loads(
        gzip.decompress(
            (BOTOCORE_DATA / service / version / "endpoint-rule-set-1.json.gz").read_bytes()
        )
    )
    partitions = json.loads((BOTOCORE_DATA / "partitions.json").read_text())
    provider = EndpointProvider(rules, partitions)
    for region in REGIONS:
        for fips in (False, True):
            for dualstack in (False, True):
                expected = provider.resolve_endpoint(
                    Region=region, UseFIPS=fips, UseDualStack=dualstack
                ).url
                ours = regional_endpoint(service, region, fips, dualstack)
                assert ours == expected, (region, fips, dualstack)


def test_an_endpoint_url_is_used_as_given_with_its_path():
    client = AwsJsonClient(
        SECRETS_MANAGER, AwsEnvironment(region="us-east-1", endpoint_url="http://10.0.0.1:4566/aws")
    )
    assert client.url == "http://10.0.0.1:4566/aws"
    fips = AwsJsonClient(SECRETS_MANAGER, AwsEnvironment(region="us-gov-west-1", use_fips=True))
    assert fips.url == "https://secretsmanager-fips.us-gov-west-1.amazonaws.com"


def test_a_region_alone_calls_the_services_ordinary_regional_endpoint():
    """Without AWS_USE_FIPS_ENDPOINT or AWS_USE_DUALSTACK_ENDPOINT, neither variant is used."""
    region_only = AwsEnvironment(region="eu-west-1")
    assert AwsJsonClient(dynamodb_service(1, 2, 3), region_only).url == (
        "https://dynamodb.eu-west-1.amazonaws.com"
    )
    assert AwsJsonClient(SECRETS_MANAGER, region_only).url == (
        "https://secretsmanager.eu-west-1.amazonaws.com"
    )


def test_error_code_is_the_last_part_of_type():
    prefix = b'{"__type": "com.amazonaws.dynamodb.v20120810#'
    assert error_code(prefix + b'ConditionalCheckFailedException"}') == (
        "ConditionalCheckFailedException"
    )
    assert error_code(b'{"__type": "ResourceNotFoundException"}') == "ResourceNotFoundException"
    assert error_code(b"<html>") == "unreadable error"
    assert error_code(b"[1, 2]") == "unreadable error"  # JSON, but not an object
    assert error_code(b'{"__type": 7}') == "unreadable error"
    assert error_code(b"{}") == "no error code"
    # Some services add the error's documentation after a colon.
    assert error_code(b'{"__type": "ValidationException:http://internal/coral/"}') == (
        "ValidationException"
    )
