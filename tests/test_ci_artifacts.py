"""CI deploys to prod exactly what dev built and checked (tools/artifacts.py, on moto's S3): the
packaged template pins each package's object version and hash, prod refuses a template or a
package that is not what dev recorded; and tools/stack_door.py finds the smoke test's door."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from tests.test_workflows import load, steps

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = """\
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
  RelayFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: makefile
    Properties:
      CodeUri: s3://{bucket}/chat-relay-dev/packages/abc123/0123456789abcdef
      Role: !GetAtt RelayFunctionRole.Arn
"""
KEY = "chat-relay-dev/packages/abc123/0123456789abcdef"


def tool(script: str, *arguments: str, endpoint: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    command = [sys.executable, str(ROOT / "tools" / script), *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def client(service: str, endpoint: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(moto_endpoint):
    s3 = client("s3", moto_endpoint)
    name = f"artifacts-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=name, Key=KEY, Body=b"the package dev built")
    return name


@pytest.fixture
def pinned(tmp_path, bucket, moto_endpoint):
    template = tmp_path / "packaged.yaml"
    template.write_text(PACKAGED.format(bucket=bucket))
    result = tool("artifacts.py", "pin", str(template), endpoint=moto_endpoint)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    name, sha = line.split("=")
    assert name == "packaged-sha256" and len(sha) == 64
    return template, sha


def test_pin_names_the_object_version_and_its_hash(pinned, bucket, moto_endpoint):
    template, _ = pinned
    function = yaml.safe_load(template.read_text())["Resources"]["RelayFunction"]
    uri = function["Properties"]["CodeUri"]
    head = client("s3", moto_endpoint).head_object(Bucket=bucket, Key=KEY)
    assert uri == {"Bucket": bucket, "Key": KEY, "Version": head["VersionId"]}
    assert len(function["Metadata"]["ArtifactSha256"]) == 64
    assert function["Metadata"]["BuildMethod"] == "makefile"
    # Intrinsics survive as CloudFormation's long form.
    assert function["Properties"]["Role"] == {"Fn::GetAtt": ["RelayFunctionRole", "Arn"]}


def test_prod_accepts_what_dev_recorded(pinned, moto_endpoint):
    template, sha = pinned
    result = tool("artifacts.py", "verify", str(template), sha, endpoint=moto_endpoint)
    assert result.returncode == 0, result.stderr


def test_a_package_overwritten_after_dev_does_not_reach_prod(pinned, bucket, moto_endpoint):
    """The unreviewed dev job of a later push writes the same key: prod still deploys, and
    checks, the version dev pinned."""
    template, sha = pinned
    client("s3", moto_endpoint).put_object(Bucket=bucket, Key=KEY, Body=b"something else")
    result = tool("artifacts.py", "verify", str(template), sha, endpoint=moto_endpoint)
    assert result.returncode == 0, result.stderr
    function = yaml.safe_load(template.read_text())["Resources"]["RelayFunction"]
    version = function["Properties"]["CodeUri"]["Version"]
    body = client("s3", moto_endpoint).get_object(Bucket=bucket, Key=KEY, VersionId=version)
    assert body["Body"].read() == b"the package dev built"


def test_a_changed_template_is_refused(pinned, moto_endpoint):
    template, sha = pinned
    template.write_text(template.read_text().replace("makefile", "makefile2"))
    result = tool("artifacts.py", "verify", str(template), sha, endpoint=moto_endpoint)
    assert result.returncode == 1
    assert "dev recorded" in result.stderr


def test_a_pinned_version_that_is_gone_is_refused(pinned, bucket, moto_endpoint):
    template, sha = pinned
    s3 = client("s3", moto_endpoint)
    version = yaml.safe_load(template.read_text())["Resources"]["RelayFunction"]["Properties"]
    s3.delete_object(Bucket=bucket, Key=KEY, VersionId=version["CodeUri"]["Version"])
    result = tool("artifacts.py", "verify", str(template), sha, endpoint=moto_endpoint)
    assert result.returncode == 1
    assert "FAIL" in result.stderr


def test_the_prod_job_checks_the_artifacts_before_it_deploys():
    jobs = load(ROOT / ".github" / "workflows" / "ci.yml")["jobs"]
    dev, prod = jobs["deploy-dev"], jobs["deploy-prod"]
    assert dev["outputs"]["packaged-sha256"] == "${{ steps.pin.outputs.packaged-sha256 }}"
    [pin] = [s for s in steps(dev) if s.get("id") == "pin"]
    assert "tools/artifacts.py pin packaged.yaml" in pin["run"]
    runs = [s.get("run", "") for s in steps(dev)]
    assert runs.index(pin["run"]) < next(i for i, r in enumerate(runs) if "sam deploy" in r)
    prod_steps = steps(prod)
    [check] = [i for i, s in enumerate(prod_steps) if "artifacts.py verify" in s.get("run", "")]
    [deploy] = [i for i, s in enumerate(prod_steps) if "sam deploy" in s.get("run", "")]
    assert check < deploy
    expected = prod_steps[check]["env"]["PACKAGED_SHA256"]
    assert expected == "${{ needs.deploy-dev.outputs.packaged-sha256 }}"
    # Each job uploads under its own stack's prefix only (what its role may write).
    assert '--s3-prefix "chat-relay-dev/packages/$GITHUB_SHA"' in "\n".join(runs)
    assert "--s3-prefix chat-relay-prod" in prod_steps[deploy]["run"]


def test_the_smoke_test_finds_a_function_url(moto_endpoint):
    cfn = client("cloudformation", moto_endpoint)
    stack = f"relay-url-{uuid.uuid4().hex[:8]}"
    cfn.create_stack(
        StackName=stack, TemplateBody=_stack_with({"FunctionUrl": "https://u.example/"})
    )
    result = tool("stack_door.py", "--stack-name", stack, endpoint=moto_endpoint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["RELAY_URL=https://u.example/"]


def test_the_smoke_test_finds_the_rest_api_and_its_key(moto_endpoint):
    key = client("apigateway", moto_endpoint).create_api_key(name="relay", enabled=True)
    cfn = client("cloudformation", moto_endpoint)
    stack = f"relay-rest-{uuid.uuid4().hex[:8]}"
    outputs = {"RestApiUrl": "https://a1b2.execute-api.us-east-1.amazonaws.com/live/"}
    cfn.create_stack(
        StackName=stack, TemplateBody=_stack_with(outputs | {"RestApiKeyId": key["id"]})
    )
    result = tool("stack_door.py", "--stack-name", stack, endpoint=moto_endpoint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"RELAY_URL={outputs['RestApiUrl']}",
        f"RELAY_API_KEY={key['value']}",
    ]


def _stack_with(outputs: dict[str, str]) -> str:
    import json

    return json.dumps(
        {
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {name: {"Value": value} for name, value in outputs.items()},
        }
    )


def test_the_pinned_template_is_still_the_relays_sam_template(tmp_path, bucket, moto_endpoint):
    """The real template as `sam package` leaves it, pinned: SAM turns the pinned location into
    the function's code at that exact object version."""
    from samtranslator.yaml_helper import yaml_parse

    from tests.cloudformation import transformed

    packaged = (
        (ROOT / "template.yaml").read_text().replace("CodeUri: .", f"CodeUri: s3://{bucket}/{KEY}")
    )
    template = tmp_path / "packaged.yaml"
    template.write_text(packaged)
    assert tool("artifacts.py", "pin", str(template), endpoint=moto_endpoint).returncode == 0
    cfn = transformed(yaml_parse(template.read_text()))
    version = client("s3", moto_endpoint).head_object(Bucket=bucket, Key=KEY)["VersionId"]
    code = cfn["Resources"]["RelayFunction"]["Properties"]["Code"]
    assert code == {"S3Bucket": bucket, "S3Key": KEY, "S3ObjectVersion": version}
