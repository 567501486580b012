"""The SAM template: lint-clean, valid for SAM CLI, and once transformed by SAM and deployed with
given parameters, safe by default: a streaming URL that answers, IAM scoped to the one secret,
logs kept for a set time, CORS and auth from parameters, every parameter used."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from handler.credentials import CredentialsUnavailable, parse_secret
from handler.settings import Settings
from tests.cloudformation import (
    ROOT,
    TEMPLATE,
    as_list,
    deployed,
    of_type,
    statements,
    transformed,
)

SAM = ROOT / ".venv-sam" / "bin" / "sam"
ALIAS = {"Ref": "RelayFunctionAliaslive"}


def secret_and_kms_statements(cfn: dict) -> list[dict]:
    """Every statement of every role that names a Secrets Manager or KMS action."""
    found = []
    for role in of_type(cfn, "AWS::IAM::Role").values():
        for policy in role["Properties"].get("Policies", []):
            found += [
                s
                for s in statements(policy["PolicyDocument"])
                if any(a.startswith(("secretsmanager:", "kms:")) for a in as_list(s["Action"]))
            ]
    return found


def wildcard_resources(found: list[dict]) -> list[dict]:
    return [s for s in found if "*" in json.dumps(s["Resource"])]


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


@pytest.mark.sam
def test_sam_validate_lint():
    result = sam("validate", "--lint", "--template", "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


@pytest.mark.sam
def test_sam_build_works_without_docker(tmp_path):
    result = sam("build", "--template", "template.yaml", "--build-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    function = tmp_path / "RelayFunction"
    assert os.access(function / "handler" / "bin" / "streaming-runtime", os.X_OK)
    assert list((function / "handler" / "__pycache__").glob("app.cpython-313.pyc"))
    assert not (function / ".venv").exists() and not (function / "tests").exists()


def test_function_url_streams_with_auth_and_cors_from_parameters():
    [url] = of_type(transformed(), "AWS::Lambda::Url").values()
    assert url["Properties"]["InvokeMode"] == "RESPONSE_STREAM"
    assert url["Properties"]["AuthType"] == {"Ref": "UrlAuthType"}

    closed = deployed(UrlAuthType="AWS_IAM")
    [url] = of_type(closed, "AWS::Lambda::Url").values()
    assert url["Properties"]["AuthType"] == "AWS_IAM"
    assert "Cors" not in url["Properties"]  # no origins given: no CORS at all

    origins = "https://chat.example.com,https://admin.example.com"
    [url] = of_type(deployed(AllowedOrigins=origins), "AWS::Lambda::Url").values()
    assert url["Properties"]["AuthType"] == "NONE"
    assert url["Properties"]["Cors"]["AllowOrigins"] == origins.split(",")
    # A frontend on another origin may read when to retry a 429.
    assert url["Properties"]["Cors"]["ExposeHeaders"] == ["x-request-id", "retry-after"]
    assert deployed()["Outputs"]["FunctionUrl"]["Value"] == {
        "Fn::GetAtt": ["RelayFunctionUrl", "FunctionUrl"]
    }


def test_a_public_url_lets_anyone_invoke_through_the_url_only():
    """SAM adds no public permission when AuthType is a parameter; without ours, 403 for all."""
    cfn = deployed(UrlAuthType="NONE")
    [url] = of_type(cfn, "AWS::Lambda::Url").values()
    grants = sorted(
        (p["Properties"] for p in of_type(cfn, "AWS::Lambda::Permission").values()),
        key=lambda p: p["Action"],
    )
    assert grants == [
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": ALIAS,
            "Principal": "*",
            "InvokedViaFunctionUrl": True,
        },
        {
            "Action": "lambda:InvokeFunctionUrl",
            "FunctionName": ALIAS,
            "Principal": "*",
            "FunctionUrlAuthType": "NONE",
        },
    ]
    assert url["Properties"]["TargetFunctionArn"] == ALIAS
    # With IAM auth nobody is granted anything by the function: callers need their own policy.
    assert of_type(deployed(UrlAuthType="AWS_IAM"), "AWS::Lambda::Permission") == {}


@pytest.mark.parametrize("snap_start", ["true", "false"])
def test_the_url_targets_the_published_alias_whether_or_not_snapstart_is_on(snap_start):
    """SnapStart applies to published versions only, so the URL points at the `live` alias;
    keeping it there when SnapStart is off means toggling it never replaces the URL."""
    cfn = deployed(EnableSnapStart=snap_start)
    [url] = of_type(cfn, "AWS::Lambda::Url").values()
    assert url["Properties"]["TargetFunctionArn"] == ALIAS
    function = cfn["Resources"]["RelayFunction"]["Properties"]
    expected = "PublishedVersions" if snap_start == "true" else "None"
    assert function["SnapStart"] == {"ApplyOn": expected}


def test_iam_reads_only_the_one_secret():
    default = secret_and_kms_statements(deployed())
    assert [s["Action"] for s in default] == ["secretsmanager:GetSecretValue"]
    assert default[0]["Resource"] == {"Ref": "OpenAISecret"}

    existing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team/openai-AbCdEf"
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    found = secret_and_kms_statements(deployed(OpenAISecretArn=existing, SecretKmsKeyArn=key))
    by_action = {s["Action"]: s for s in found}
    assert set(by_action) == {"secretsmanager:GetSecretValue", "kms:Decrypt"}
    assert by_action["secretsmanager:GetSecretValue"]["Resource"] == existing
    decrypt = by_action["kms:Decrypt"]
    assert decrypt["Resource"] == key
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}
    }
    assert wildcard_resources(found) == []
    assert not of_type(deployed(OpenAISecretArn=existing), "AWS::SecretsManager::Secret")


@pytest.mark.parametrize(
    ("arn", "accepted"),
    [
        ("", True),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:team/openai-AbCdEf", True),
        ("arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:openai_key-a1B2c3", True),
        # A partial ARN: GetSecretValue would find the secret, the IAM grant would never match.
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:team/openai", False),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:team/openai-AbCdE", False),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:team/openai-AbCdEf*", False),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:*", False),
    ],
)
def test_an_existing_secret_must_be_named_by_its_full_arn(arn, accepted):
    pattern = TEMPLATE["Parameters"]["OpenAISecretArn"]["AllowedPattern"]
    # CloudFormation matches the whole value against the pattern.
    assert (re.fullmatch(pattern, arn) is not None) == accepted


def test_the_scope_check_catches_a_wildcard():
    broken = copy.deepcopy(TEMPLATE)
    policy = broken["Resources"]["RelayFunctionRole"]["Properties"]["Policies"][0]
    policy["PolicyDocument"]["Statement"][0]["Resource"] = "*"
    assert wildcard_resources(secret_and_kms_statements(deployed(broken)))


def test_the_function_reads_the_secret_the_stack_points_it_at():
    function = deployed()["Resources"]["RelayFunction"]["Properties"]
    assert function["Environment"]["Variables"]["OPENAI_SECRET_ID"] == {"Ref": "OpenAISecret"}
    assert deployed()["Outputs"]["SecretArn"]["Value"] == {"Ref": "OpenAISecret"}


def test_logs_are_kept_for_the_configured_days():
    cfn = deployed(LogRetentionDays="14")
    [group] = of_type(cfn, "AWS::Logs::LogGroup").values()
    assert group["Properties"]["RetentionInDays"] == "14"
    function = cfn["Resources"]["RelayFunction"]["Properties"]
    assert function["LoggingConfig"]["LogGroup"] == {"Ref": "RelayLogGroup"}
    assert cfn["Outputs"]["LogGroupName"]["Value"] == {"Ref": "RelayLogGroup"}


def test_native_mode_runs_our_runtime_without_the_adapter():
    function = deployed(StreamingMode="native")["Resources"]["RelayFunction"]["Properties"]
    assert function["Runtime"] == "python3.13"
    assert function["Handler"] == "handler.app.handler"
    variables = function["Environment"]["Variables"]
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == "/var/task/handler/bin/streaming-runtime"
    assert not [name for name in variables if name.startswith("AWS_LWA_")]
    assert "Layers" not in function
    assert os.access(ROOT / "handler" / "bin" / "streaming-runtime", os.X_OK)


@pytest.mark.parametrize(("architecture", "layer"), [("arm64", "Arm64"), ("x86_64", "X86")])
def test_lwa_mode_defaults_to_lambda_web_adapter_1_1(architecture, layer):
    """Layer version 30 is 1.1.0 for both architectures (29 was skipped)."""
    cfn = deployed(StreamingMode="lwa", Architecture=architecture)
    function = cfn["Resources"]["RelayFunction"]["Properties"]
    assert function["Layers"] == [
        f"arn:aws:lambda:us-east-1:753240598075:layer:LambdaAdapterLayer{layer}:30"
    ]


def test_lwa_mode_with_snapstart_asks_the_adapter_for_its_after_restore_hook():
    """Lambda Web Adapter 1.1.0 calls the app after a SnapStart restore, before any traffic;
    handler/lwa.py serves that path (tests/test_lwa_snapstart.py)."""
    from handler.lwa import AFTER_RESTORE_PATH

    variables = deployed(StreamingMode="lwa", EnableSnapStart="true")["Resources"]
    variables = variables["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH"] == AFTER_RESTORE_PATH
    for other in ({"StreamingMode": "lwa"}, {"EnableSnapStart": "true"}):
        variables = deployed(**other)["Resources"]["RelayFunction"]["Properties"]
        assert "AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH" not in variables["Environment"]["Variables"]


@pytest.mark.parametrize(("architecture", "layer"), [("arm64", "Arm64"), ("x86_64", "X86")])
def test_lwa_mode_runs_the_adapter_layer_for_the_architecture(architecture, layer):
    cfn = deployed(StreamingMode="lwa", Architecture=architecture, LwaLayerVersion="26")
    function = cfn["Resources"]["RelayFunction"]["Properties"]
    assert function["Architectures"] == [architecture]
    assert function["Handler"] == "handler/bin/lwa-start"
    assert function["Layers"] == [
        f"arn:aws:lambda:us-east-1:753240598075:layer:LambdaAdapterLayer{layer}:26"
    ]
    assert (
        function["Environment"]["Variables"]
        | {
            "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
            "AWS_LWA_INVOKE_MODE": "response_stream",
            "AWS_LWA_PORT": "8000",
            "AWS_LWA_READINESS_CHECK_PATH": "/healthz",
            "AWS_LWA_READINESS_CHECK_HEALTHY_STATUS": "200",
        }
        == function["Environment"]["Variables"]
    )
    assert os.access(ROOT / "handler" / "bin" / "lwa-start", os.X_OK)


def test_capacity_and_model_policy_come_from_parameters():
    cfn = deployed(
        ReservedConcurrency="3",
        MemorySize="1024",
        Timeout="120",
        DefaultModel="gpt-4.1-mini",
        AllowedModels="gpt-4.1-mini,gpt-4o",
        MaxTokensCap="512",
    )
    function = cfn["Resources"]["RelayFunction"]["Properties"]
    assert function["ReservedConcurrentExecutions"] == "3"
    assert (function["MemorySize"], function["Timeout"]) == ("1024", "120")
    assert (
        function["Environment"]["Variables"]
        | {
            "DEFAULT_MODEL": "gpt-4.1-mini",
            "ALLOWED_MODELS": "gpt-4.1-mini,gpt-4o",
            "MAX_TOKENS_CAP": "512",
        }
        == function["Environment"]["Variables"]
    )


def test_access_is_closed_by_default_and_opened_only_by_parameters():
    env = deployed()["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert env["ALLOW_ANONYMOUS"] == "false"
    assert env["URL_AUTH_TYPE"] == "NONE"
    assert "JWT_ISSUER" not in env and "JWT_AUDIENCE" not in env
    issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example"
    cfn = deployed(UrlAuthType="AWS_IAM", JwtIssuer=issuer, JwtAudience="app-client-1")
    env = cfn["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert env["URL_AUTH_TYPE"] == "AWS_IAM"  # the relay trusts the event's IAM caller only then
    assert (env["JWT_ISSUER"], env["JWT_AUDIENCE"]) == (issuer, "app-client-1")
    # The settings the template writes are ones the relay accepts.
    Settings(_env_file=None, **{k.lower(): v for k, v in env.items() if k.startswith("JWT_")})
    rule = TEMPLATE["Rules"]["SignInNeedsAnAudience"]
    assert rule["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "JwtAudience"}, ""]}]
    }


def test_the_secret_the_stack_creates_is_refused_until_the_key_is_put_in():
    secret = TEMPLATE["Resources"]["OpenAISecret"]["Properties"]["GenerateSecretString"]
    generated = json.loads(secret["SecretStringTemplate"])
    generated[secret["GenerateStringKey"]] = "Zx81generated"
    with pytest.raises(CredentialsUnavailable) as refused:
        parse_secret(json.dumps(generated))
    assert "placeholder" in refused.value.reason
    generated["api_key"] = "sk-proj-the-real-key-0123456789abcdefghij"
    assert parse_secret(json.dumps(generated)).client_tokens == ()


def test_alarms_cover_errors_throttles_and_p99_duration():
    topic = "arn:aws:sns:us-east-1:123456789012:relay-alarms"
    alarms = of_type(deployed(AlarmTopicArn=topic), "AWS::CloudWatch::Alarm").values()
    metrics = {
        a["Properties"]["MetricName"]: a["Properties"]
        for a in alarms
        if a["Properties"].get("Namespace") == "AWS/Lambda"
    }
    assert set(metrics) == {"Errors", "Throttles", "Duration"}
    assert metrics["Duration"]["ExtendedStatistic"] == "p99"
    for alarm in metrics.values():
        assert alarm["AlarmActions"] == [topic]
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "RelayFunction"}}]
    for alarm in of_type(deployed(), "AWS::CloudWatch::Alarm").values():
        assert "AlarmActions" not in alarm["Properties"]  # no topic: alarms without actions
    for alarm in of_type(deployed(AlarmTopicArn=topic), "AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [topic]


def test_the_function_role_carries_the_boundary_when_one_is_named():
    """Both roles the stack makes: the function's and CodeDeploy's (the CI role may create
    roles only with its boundary)."""
    cfn = deployed(PermissionsBoundaryName="chat-relay-dev-function-boundary")
    roles = of_type(cfn, "AWS::IAM::Role")
    assert set(roles) == {"RelayFunctionRole", "RelayDeploymentRole"}
    for role in roles.values():
        assert role["Properties"]["PermissionsBoundary"] == (
            "arn:aws:iam::123456789012:policy/chat-relay-dev-function-boundary"
        )
    for role in of_type(deployed(), "AWS::IAM::Role").values():
        assert "PermissionsBoundary" not in role["Properties"]


def test_every_parameter_is_described_bounded_and_used():
    text = (ROOT / "template.yaml").read_text()
    body = text.split("\nConditions:", 1)[1]
    for name, spec in TEMPLATE["Parameters"].items():
        assert spec.get("Description"), name
        assert {"AllowedValues", "AllowedPattern", "MinValue"} & spec.keys(), name
        assert re.search(rf"(!Ref {name}\b|\$\{{{name}\}})", body), f"{name} is never used"


def test_outputs():
    always = {"SecretArn", "FunctionName", "LogGroupName", "QuotaTableName", "DashboardUrl"}
    topic = {"AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:relay-alarms"}
    assert set(deployed(**topic)["Outputs"]) == always | {"FunctionUrl"}
    rest = deployed(FrontDoor="RestApi", **topic)["Outputs"]
    assert set(rest) == always | {"RestApiUrl", "RestApiKeyId"}
    # Without a topic, every deploy says so (tests/test_alarms.py).
    assert set(deployed()["Outputs"]) == always | {"FunctionUrl", "AlarmTopicMissing"}
    with_domain = deployed(FrontDoor="RestApi", DomainName="chat.example.com", CertificateArn=CERT)
    assert with_domain["Outputs"]["RestApiUrl"]["Value"] == "https://chat.example.com/"
    assert "RestApiDomainTarget" in with_domain["Outputs"]


MANAGED_INSTANCES = {
    "CapacityProvider": "ManagedInstances",
    "CapacityProviderSubnetIds": "subnet-0a1b2c3d,subnet-4e5f6a7b",
    "CapacityProviderSecurityGroupIds": "sg-0123abcd",
}


def test_the_quota_table_is_on_demand_keyed_by_pk_with_ttl():
    [table] = of_type(deployed(), "AWS::DynamoDB::Table").values()
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert properties["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    # Named after the stack, so the CI deploy role and the boundary can be scoped to it.
    assert properties["TableName"] == "chat-relay-dev-quota"


def test_the_function_may_only_update_and_read_items_of_its_quota_table():
    role = deployed()["Resources"]["RelayFunctionRole"]
    found = [
        s
        for policy in role["Properties"]["Policies"]
        for s in statements(policy["PolicyDocument"])
        if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))
    ]
    # UpdateItem counts and settles; GetItem reads one caller's item for GET /me.
    assert [(s["Action"], s["Resource"]) for s in found] == [
        (["dynamodb:UpdateItem", "dynamodb:GetItem"], {"Fn::GetAtt": ["QuotaTable", "Arn"]})
    ]


def test_limits_and_the_metrics_namespace_come_from_parameters():
    cfn = deployed(RateLimitPerMinute="7", TokenBudgetPerDay="50000")
    variables = cfn["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["QUOTA_TABLE"] == {"Ref": "QuotaTable"}
    assert variables["RATE_LIMIT_PER_MINUTE"] == "7"
    assert variables["TOKEN_BUDGET_PER_DAY"] == "50000"
    assert variables["METRICS_NAMESPACE"] == "ChatRelay/chat-relay-dev"
    # Deployed with defaults, a caller is limited: "no limit" must be asked for.
    defaults = deployed()["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert int(defaults["RATE_LIMIT_PER_MINUTE"]) > 0 and int(defaults["TOKEN_BUDGET_PER_DAY"]) > 0


def test_the_token_alarm_is_on_by_default_off_only_at_zero_and_notifies_the_topic():
    assert "TokensPerHourAlarm" not in deployed(TokenAlarmPerHour="0")["Resources"]
    default = deployed()["Resources"]["TokensPerHourAlarm"]["Properties"]
    assert int(default["Threshold"]) == TEMPLATE["Parameters"]["TokenAlarmPerHour"]["Default"] > 0
    topic = "arn:aws:sns:us-east-1:123456789012:relay-alarms"
    cfn = deployed(TokenAlarmPerHour="2000000", AlarmTopicArn=topic)
    alarm = cfn["Resources"]["TokensPerHourAlarm"]["Properties"]
    variables = cfn["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert alarm["Namespace"] == variables["METRICS_NAMESPACE"]
    assert (alarm["MetricName"], alarm["Statistic"], alarm["Period"]) == ("Tokens", "Sum", 3600)
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == ("2000000", "GreaterThanThreshold")
    assert alarm["AlarmActions"] == [topic]
    others = of_type(cfn, "AWS::CloudWatch::Alarm").values()
    assert all(a["Properties"]["AlarmActions"] == [topic] for a in others)


def dashboard_body(cfn: dict) -> dict:
    """The dashboard's JSON as CloudFormation would render it for the stack."""
    template, variables = cfn["Resources"]["RelayDashboard"]["Properties"]["DashboardBody"][
        "Fn::Sub"
    ]
    values = {**variables, "AWS::Region": "us-east-1", "FunctionName": "chat-relay-dev-relay"}
    values["ReservedConcurrency"] = "10"
    return json.loads(re.sub(r"\$\{([\w:]+)\}", lambda m: values[m[1]], template))


def test_the_dashboard_shows_requests_outcomes_tokens_ttft_throttles_and_concurrency():
    body = dashboard_body(deployed())
    widgets = {w["properties"]["title"]: w["properties"] for w in body["widgets"]}
    assert set(widgets) == {
        "Requests by outcome",
        "Tokens per model",
        "Time to first token (ms)",
        "Refused and throttled",
        "Concurrent streams",
    }
    text = json.dumps(body)
    # Every relay metric it shows is one the request log line emits (handler/metrics.py).
    for name in ("Requests", "PromptTokens", "CompletionTokens", "FirstTokenMs"):
        assert name in text
    ttft = widgets["Time to first token (ms)"]["metrics"]
    assert [m[-1]["stat"] for m in ttft] == ["p50", "p99"]
    assert all(m[0] == "ChatRelay/chat-relay-dev" for m in ttft)
    refused = [m[1] for m in widgets["Refused and throttled"]["metrics"]]
    assert refused == ["RateLimited", "QuotaExceeded", "Throttles"]
    [concurrency] = widgets["Concurrent streams"]["metrics"]
    assert concurrency == [
        "AWS/Lambda",
        "ConcurrentExecutions",
        "FunctionName",
        "chat-relay-dev-relay",
    ]


@pytest.mark.parametrize("mode", ["native", "lwa"])
@pytest.mark.parametrize("door", ["FunctionUrl", "RestApi"])
@pytest.mark.parametrize("compute", ["none", "ManagedInstances"])
def test_template_transforms_for_every_combination_of_switches(mode, door, compute):
    capacity = MANAGED_INSTANCES if compute == "ManagedInstances" else {}
    for auth in ("NONE", "AWS_IAM"):
        cfn = deployed(
            StreamingMode=mode, EnableSnapStart="true", UrlAuthType=auth, FrontDoor=door, **capacity
        )
        [function] = of_type(cfn, "AWS::Lambda::Function").values()
        assert bool(of_type(cfn, "AWS::Lambda::Url")) == (door == "FunctionUrl")
        assert bool(of_type(cfn, "AWS::ApiGateway::RestApi")) == (door == "RestApi")
        assert ("CapacityProviderConfig" in function["Properties"]) == bool(capacity)


CERT = "arn:aws:acm:us-east-1:123456789012:certificate/1234abcd-12ab-34cd-56ef-1234567890ab"
STREAMING_URI = re.compile(
    r"^arn:\$\{AWS::Partition\}:apigateway:\$\{AWS::Region\}:lambda:path/2021-11-15/"
    r"functions/\$\{Alias\}/response-streaming-invocations$"
)


def test_rest_api_door_streams_every_route_behind_api_keys_and_a_usage_plan():
    cfn = deployed(
        FrontDoor="RestApi", ApiRateLimit="5", ApiBurstLimit="12", ApiMonthlyQuota="50000"
    )
    assert of_type(cfn, "AWS::Lambda::Url") == {}  # no way around the API's keys
    [api] = of_type(cfn, "AWS::ApiGateway::RestApi").values()
    body = api["Properties"]["Body"]
    assert set(body["paths"]) == {"/", "/{proxy+}"}
    for path in body["paths"].values():
        method = path["x-amazon-apigateway-any-method"]
        assert method["security"] == [{"api_key": []}]
        integration = method["x-amazon-apigateway-integration"]
        assert (integration["type"], integration["httpMethod"]) == ("aws_proxy", "POST")
        assert integration["responseTransferMode"] == "STREAM"
        template, values = integration["uri"]["Fn::Sub"]
        assert STREAMING_URI.match(template), template
        assert values == {"Alias": ALIAS}
    assert body["securityDefinitions"]["api_key"] == {
        "type": "apiKey",
        "name": "x-api-key",
        "in": "header",
    }

    [plan] = of_type(cfn, "AWS::ApiGateway::UsagePlan").values()
    assert plan["Properties"]["Throttle"] == {"RateLimit": "5", "BurstLimit": "12"}
    assert plan["Properties"]["Quota"] == {"Limit": "50000", "Period": "MONTH"}
    [(key_id, key)] = of_type(cfn, "AWS::ApiGateway::ApiKey").items()
    assert key["Properties"]["Enabled"] is True
    [link] = of_type(cfn, "AWS::ApiGateway::UsagePlanKey").values()
    assert link["Properties"]["KeyId"] == {"Ref": key_id}
    assert cfn["Outputs"]["RestApiKeyId"]["Value"] == {"Ref": key_id}

    [stage] = of_type(cfn, "AWS::ApiGateway::Stage").values()
    access_logs = stage["Properties"]["AccessLogSetting"]
    assert access_logs["DestinationArn"] == {"Fn::GetAtt": ["RestApiAccessLogGroup", "Arn"]}
    assert json.loads(access_logs["Format"])["apiKeyId"] == "$context.identity.apiKeyId"

    [grant] = of_type(cfn, "AWS::Lambda::Permission").values()
    assert grant["Properties"]["Principal"] == "apigateway.amazonaws.com"
    assert grant["Properties"]["FunctionName"] == ALIAS
    function = cfn["Resources"]["RelayFunction"]["Properties"]
    assert function["Environment"]["Variables"]["STREAM_EVENTS"] == "url,rest"
    assert of_type(cfn, "AWS::WAFv2::WebACLAssociation") == {}
    assert of_type(cfn, "AWS::ApiGateway::DomainName") == {}


def test_rest_api_door_takes_a_web_acl_and_a_custom_domain():
    acl = "arn:aws:wafv2:us-east-1:123456789012:regional/webacl/relay/0a1b2c3d"
    cfn = deployed(
        FrontDoor="RestApi", WebAclArn=acl, DomainName="chat.example.com", CertificateArn=CERT
    )
    [association] = of_type(cfn, "AWS::WAFv2::WebACLAssociation").values()
    assert association["Properties"]["WebACLArn"] == acl
    assert association["Properties"]["ResourceArn"] == (
        "arn:aws:apigateway:us-east-1::/restapis/${RelayRestApi}/stages/${RelayRestApiliveStage}"
    )
    [domain] = of_type(cfn, "AWS::ApiGateway::DomainName").values()
    assert domain["Properties"]["DomainName"] == "chat.example.com"
    assert domain["Properties"]["RegionalCertificateArn"] == CERT
    [mapping] = of_type(cfn, "AWS::ApiGateway::BasePathMapping").values()
    assert mapping["Properties"]["RestApiId"] == {"Ref": "RelayRestApi"}


def test_the_function_url_door_has_no_api_and_streams_only_url_events():
    cfn = deployed()
    assert of_type(cfn, "AWS::ApiGateway::RestApi") == {}
    variables = cfn["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert "STREAM_EVENTS" not in variables  # the runtime's default: url


def test_managed_instances_run_the_function_on_a_capacity_provider_in_the_given_subnets():
    cfn = deployed(PerExecutionEnvironmentMaxConcurrency="128", **MANAGED_INSTANCES)
    [provider] = of_type(cfn, "AWS::Lambda::CapacityProvider").values()
    vpc = provider["Properties"]["VpcConfig"]
    assert (
        vpc["SubnetIds"] == {"Ref": "CapacityProviderSubnetIds"}
        or vpc["SubnetIds"] == (MANAGED_INSTANCES["CapacityProviderSubnetIds"])
    )
    [function] = of_type(cfn, "AWS::Lambda::Function").values()
    config = function["Properties"]["CapacityProviderConfig"]
    config = config["LambdaManagedInstancesCapacityProviderConfig"]
    assert config["PerExecutionEnvironmentMaxConcurrency"] == "128"
    assert config["CapacityProviderArn"] == (
        "arn:aws:lambda:us-east-1:123456789012:capacity-provider:${RelayCapacityProvider}"
    )
    assert "SnapStart" not in function["Properties"]
    assert function["Properties"]["LoggingConfig"]["LogFormat"] == "JSON"
    # Everything that pointed at the function follows it.
    [url] = of_type(cfn, "AWS::Lambda::Url").values()
    assert url["Properties"]["TargetFunctionArn"] == {"Ref": "RelayFunctionOnInstancesAliaslive"}
    for alarm in of_type(cfn, "AWS::CloudWatch::Alarm").values():
        if alarm["Properties"].get("Namespace") == "AWS/Lambda":
            value = alarm["Properties"]["Dimensions"][0]["Value"]
            assert value == {"Ref": "RelayFunctionOnInstances"}
    # Off by default.
    assert of_type(deployed(), "AWS::Lambda::CapacityProvider") == {}
