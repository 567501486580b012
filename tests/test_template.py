"""The SAM template and the CI access stack: lint-clean, and once transformed by SAM, safe by
default: a streaming URL, IAM scoped to the one secret, logs kept for a set time, CORS and auth
from parameters, every parameter used."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = yaml_parse((ROOT / "template.yaml").read_text())
SAM = ROOT / ".venv-sam" / "bin" / "sam"


class ManagedPolicies:
    """SAM asks for the ARNs of AWS managed policies; these are the ones it may attach."""

    def load(self) -> dict[str, str]:
        return {
            "AWSLambdaBasicExecutionRole": (
                "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
            )
        }


def transformed(template: dict | None = None, **parameters: str) -> dict:
    """The template as CloudFormation sees it after `sam package` and the SAM transform."""
    template = copy.deepcopy(template or TEMPLATE)
    template["Resources"]["RelayFunction"]["Properties"]["CodeUri"] = "s3://artifacts/relay.zip"
    return transform(template, parameters, ManagedPolicies())


def resources_of_type(cfn: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == kind}


def secret_and_kms_statements(cfn: dict) -> list[dict]:
    statements = []
    for role in resources_of_type(cfn, "AWS::IAM::Role").values():
        for policy in role["Properties"].get("Policies", []):
            document = json.dumps(policy["PolicyDocument"])
            statements += [
                s
                for s in _statements(json.loads(document))
                if any(a.startswith(("secretsmanager:", "kms:")) for a in _list(s["Action"]))
            ]
    return statements


def _statements(document: dict) -> list[dict]:
    found = []
    for item in document.get("Statement", []):
        if "Fn::If" in item:  # conditional statements: check both branches
            found += [b for b in item["Fn::If"][1:] if isinstance(b, dict) and "Effect" in b]
        else:
            found.append(item)
    return found


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def wildcard_resources(statements: list[dict]) -> list[dict]:
    return [s for s in statements if "*" in json.dumps(s["Resource"])]


def test_cfn_lint_is_clean_on_every_stack():
    stacks = [
        "template.yaml",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "infra").glob("*.yaml")),
    ]
    assert len(stacks) >= 2
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), *stacks],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def sam(*arguments: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "SAM_CLI_TELEMETRY": "0",
    }
    return subprocess.run(
        [str(SAM), *arguments], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_sam_validate_lint():
    result = sam("validate", "--lint", "--template", "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_sam_build_works_without_docker(tmp_path):
    result = sam("build", "--template", "template.yaml", "--build-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    function = tmp_path / "RelayFunction"
    assert os.access(function / "handler" / "bin" / "streaming-runtime", os.X_OK)
    assert list((function / "handler" / "__pycache__").glob("app.cpython-313.pyc"))
    assert not (function / ".venv").exists() and not (function / "tests").exists()


def test_function_url_streams_with_auth_and_cors_from_parameters():
    cfn = transformed()
    [url] = resources_of_type(cfn, "AWS::Lambda::Url").values()
    props = url["Properties"]
    assert props["InvokeMode"] == "RESPONSE_STREAM"
    assert props["AuthType"] == {"Ref": "UrlAuthType"}
    cors = props["Cors"]["Fn::If"]
    assert cors[0] == "HasCors"
    assert cors[1]["AllowOrigins"] == {"Fn::Split": [",", {"Ref": "AllowedOrigins"}]}
    assert cors[2] == {"Ref": "AWS::NoValue"}
    # The URL points at the published alias, so SnapStart (published versions only) applies.
    assert props["TargetFunctionArn"] == {"Ref": "RelayFunctionAliaslive"}
    assert cfn["Outputs"]["FunctionUrl"]["Value"] == {
        "Fn::GetAtt": ["RelayFunctionUrl", "FunctionUrl"]
    }


def test_iam_reads_only_the_one_secret():
    cfn = transformed()
    statements = secret_and_kms_statements(cfn)
    actions = sorted(a for s in statements for a in _list(s["Action"]))
    assert actions == ["kms:Decrypt", "secretsmanager:GetSecretValue"]
    assert wildcard_resources(statements) == []
    read = next(s for s in statements if s["Action"] == "secretsmanager:GetSecretValue")
    assert read["Resource"] == {
        "Fn::If": ["CreateSecret", {"Ref": "OpenAISecret"}, {"Ref": "OpenAISecretArn"}]
    }
    decrypt = next(s for s in statements if s["Action"] == "kms:Decrypt")
    assert decrypt["Resource"] == {"Ref": "SecretKmsKeyArn"}
    assert "kms:ViaService" in json.dumps(decrypt["Condition"])


def test_the_scope_check_catches_a_wildcard():
    broken = copy.deepcopy(TEMPLATE)
    policy = broken["Resources"]["RelayFunction"]["Properties"]["Policies"][0]
    policy["Statement"][0]["Resource"] = "*"
    assert wildcard_resources(secret_and_kms_statements(transformed(broken)))


def test_logs_are_kept_for_the_configured_days():
    cfn = transformed()
    [group] = resources_of_type(cfn, "AWS::Logs::LogGroup").values()
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    function = cfn["Resources"]["RelayFunction"]["Properties"]
    assert function["LoggingConfig"]["LogGroup"] == {"Ref": "RelayLogGroup"}


def test_function_runs_python313_with_both_streaming_modes_wired():
    function = transformed()["Resources"]["RelayFunction"]["Properties"]
    assert function["Runtime"] == "python3.13"
    assert function["Architectures"] == [{"Ref": "Architecture"}]
    assert function["ReservedConcurrentExecutions"] == {"Ref": "ReservedConcurrency"}
    wrapper = function["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"]["Fn::If"]
    assert wrapper == [
        "NativeStreaming",
        "/var/task/handler/bin/streaming-runtime",
        "/opt/bootstrap",
    ]
    handler = function["Handler"]["Fn::If"]
    assert handler[1] == "handler.app.handler"
    # The scripts the template names exist in the package and are executable.
    for script in (wrapper[1].removeprefix("/var/task/"), handler[2]):
        assert os.access(ROOT / script, os.X_OK), script
    layer = json.dumps(function["Layers"])
    assert "LambdaAdapterLayerArm64:${LwaLayerVersion}" in layer
    assert "LambdaAdapterLayerX86:${LwaLayerVersion}" in layer


def test_alarms_cover_errors_throttles_and_p99_duration():
    alarms = resources_of_type(transformed(), "AWS::CloudWatch::Alarm").values()
    metrics = {a["Properties"]["MetricName"]: a["Properties"] for a in alarms}
    assert set(metrics) == {"Errors", "Throttles", "Duration"}
    assert metrics["Duration"]["ExtendedStatistic"] == "p99"
    for alarm in metrics.values():
        assert alarm["AlarmActions"]["Fn::If"][0] == "HasAlarmTopic"


def test_every_parameter_is_described_bounded_and_used():
    text = (ROOT / "template.yaml").read_text()
    body = text.split("\nConditions:", 1)[1]
    for name, spec in TEMPLATE["Parameters"].items():
        assert spec.get("Description"), name
        assert {"AllowedValues", "AllowedPattern", "MinValue"} & spec.keys(), name
        assert re.search(rf"(!Ref {name}\b|\$\{{{name}\}})", body), f"{name} is never used"


def test_outputs():
    assert set(TEMPLATE["Outputs"]) == {"FunctionUrl", "SecretArn", "FunctionName", "LogGroupName"}


def test_ci_role_is_limited_to_main_and_production():
    stack = yaml_parse((ROOT / "infra" / "ci-access.yaml").read_text())
    trust = stack["Resources"]["DeployRole"]["Properties"]["AssumeRolePolicyDocument"]
    [statement] = trust["Statement"]
    subjects = statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"]
    assert [s["Fn::Sub"] for s in subjects] == [
        "repo:${GitHubRepository}:ref:refs/heads/main",
        "repo:${GitHubRepository}:environment:production",
    ]
    policy = stack["Resources"]["DeployRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    for rule in policy["Statement"]:
        if rule["Resource"] == "*":  # only actions that have no resource to scope to
            assert set(_list(rule["Action"])) <= {
                "secretsmanager:GetRandomPassword",
                "cloudformation:ValidateTemplate",
            }


@pytest.mark.parametrize("mode", ["native", "lwa"])
def test_template_transforms_for_every_mode(mode):
    cfn = transformed(StreamingMode=mode, EnableSnapStart="true", UrlAuthType="AWS_IAM")
    assert resources_of_type(cfn, "AWS::Lambda::Url")
