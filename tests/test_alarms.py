"""The alarms watch how the relay fails (its own metrics, not only Lambda's), they are the gradual
deployment's rollback alarms, and each environment's configuration says where they go."""

from __future__ import annotations

import re
import tomllib

import pytest

from handler import errors
from handler.metrics import _directives
from tests.cloudformation import CI_ACCESS, ROOT, TEMPLATE, deployed, of_type

NAMESPACE = "ChatRelay/chat-relay-dev"
# Outcomes that are not the relay's failure: the caller's own mistakes and hang-ups.
NOT_FAILURES = {"ok", "rejected", "client_disconnected"}
ROLLBACK_ALARMS = {
    "FailureShareAlarm",
    "FirstTokenP99Alarm",
    "ModelUnavailableAlarm",
    "ErrorsAlarm",
}


def alarms(**parameters: str) -> dict[str, dict]:
    cfn = deployed(**parameters)
    return {name: a["Properties"] for name, a in of_type(cfn, "AWS::CloudWatch::Alarm").items()}


def declared_outcomes() -> set[str]:
    kinds = [v for v in vars(errors).values() if isinstance(v, errors.ErrorKind)]
    return {kind.outcome for kind in kinds} | {"ok", "client_disconnected", "error"}


def failure_share_metrics() -> dict[str, str]:
    """The alarm's metric ids -> the Outcome each reads."""
    share = alarms()["FailureShareAlarm"]
    found = {}
    for query in share["Metrics"]:
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            assert (metric["Namespace"], metric["MetricName"]) == (NAMESPACE, "Requests")
            [dimension] = metric["Dimensions"]
            assert dimension["Name"] == "Outcome"
            found[query["Id"]] = dimension["Value"]
    return found


def test_the_failure_share_counts_every_failure_outcome_and_nothing_else():
    """An outcome added to handler/errors.py is the relay's failure unless it is the caller's;
    this fails until the alarm counts it (an alarm reads at most 10 metrics)."""
    read = failure_share_metrics()
    assert set(read.values()) == declared_outcomes() - {"rejected", "client_disconnected"}
    assert "model_unavailable" in read.values()
    assert len(read) <= 10


def evaluate_share(expression: str, counts: dict[str, float], queries: list[dict]) -> float:
    """The alarm's metric math for one minute's counts (FILL, IF, + and arithmetic)."""
    values: dict[str, float | None] = {
        q["Id"]: counts.get(q["Id"]) for q in queries if "MetricStat" in q
    }

    def fill(value, default):
        return default if value is None else value

    def when(condition, then, otherwise):
        return then() if condition else otherwise()

    for query in queries:
        if "Expression" not in query:
            continue
        text = query["Expression"]
        text = re.sub(r"IF\((.+?), (.+), (\S+)\)$", r"when(\1, lambda: \2, lambda: \3)", text)
        namespace = {**values, "fill": fill, "when": when}
        values[query["Id"]] = eval(text.replace("FILL", "fill"), namespace)
    return values[expression]


@pytest.mark.parametrize(
    ("counts", "share"),
    [
        ({"ok": 95, "upstream_error": 3, "upstream_timeout": 2}, 5.0),
        ({"ok": 90, "model_unavailable": 10}, 10.0),
        ({"ok": 10}, 0.0),
        ({"upstream_error": 2}, 0.0),  # fewer requests than FailureAlarmMinRequests
        ({"credentials_unavailable": 20}, 100.0),  # a revoked key: Lambda's Errors stay at 0
    ],
)
def test_the_failure_share_is_the_failed_part_of_the_answered_requests(counts, share):
    alarm = alarms()["FailureShareAlarm"]
    [watched] = [q for q in alarm["Metrics"] if q.get("ReturnData")]
    assert evaluate_share(watched["Id"], counts, alarm["Metrics"]) == share
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == ("5", "GreaterThanThreshold")


def test_alarms_on_the_relays_metrics_read_metrics_the_log_line_emits():
    emitted = {
        (metric["Name"], tuple(dimensions))
        for directive in _directives(NAMESPACE, True, True)
        for dimensions in directive["Dimensions"]
        for metric in directive["Metrics"]
    }
    for name, alarm in alarms().items():
        queries = [q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q]
        if "MetricName" in alarm:
            queries.append(alarm)
        for metric in queries:
            if metric["Namespace"] != NAMESPACE:
                continue
            dimensions = tuple(d["Name"] for d in metric.get("Dimensions", []))
            assert (metric["MetricName"], dimensions) in emitted, name


def test_first_token_p99_and_model_unavailable_are_alarmed():
    found = alarms(FirstTokenP99AlarmMs="8000")
    ttft = found["FirstTokenP99Alarm"]
    assert (ttft["MetricName"], ttft["ExtendedStatistic"], ttft["Threshold"]) == (
        "FirstTokenMs",
        "p99",
        "8000",
    )
    gone = found["ModelUnavailableAlarm"]
    assert gone["Dimensions"] == [{"Name": "Outcome", "Value": "model_unavailable"}]
    assert (gone["Threshold"], gone["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")


def test_the_spend_alarm_is_on_by_default():
    spend = alarms()["TokensPerHourAlarm"]
    assert (spend["MetricName"], spend["Period"]) == ("Tokens", 3600)
    assert int(spend["Threshold"]) == TEMPLATE["Parameters"]["TokenAlarmPerHour"]["Default"]


@pytest.mark.parametrize(
    "strategy", ["Canary10Percent5Minutes", "AllAtOnce", "Linear10PercentEvery1Minute"]
)
def test_a_new_version_goes_live_gradually_and_rolls_back_on_the_relays_alarms(strategy):
    cfn = deployed(DeploymentStrategy=strategy)
    [group] = of_type(cfn, "AWS::CodeDeploy::DeploymentGroup").values()
    properties = group["Properties"]
    assert properties["AutoRollbackConfiguration"]["Enabled"] is True
    assert "DEPLOYMENT_STOP_ON_ALARM" in properties["AutoRollbackConfiguration"]["Events"]
    assert {a["Name"]["Ref"] for a in properties["AlarmConfiguration"]["Alarms"]} == ROLLBACK_ALARMS
    assert properties["AlarmConfiguration"]["Enabled"] is True
    config = properties["DeploymentConfigName"]
    assert strategy in repr(config)
    assert properties["ServiceRoleArn"] == {"Fn::GetAtt": ["RelayDeploymentRole", "Arn"]}
    alias = cfn["Resources"]["RelayFunctionAliaslive"]
    assert "CodeDeployLambdaAliasUpdate" in alias["UpdatePolicy"]


def test_the_deployment_role_moves_only_this_stacks_alias():
    role = deployed()["Resources"]["RelayDeploymentRole"]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "codedeploy.amazonaws.com"}
    [policy] = role["Policies"]
    grants = {
        action: statement["Resource"]
        for statement in policy["PolicyDocument"]["Statement"]
        for action in statement["Action"]
        if isinstance(statement["Action"], list)
    } | {
        statement["Action"]: statement["Resource"]
        for statement in policy["PolicyDocument"]["Statement"]
        if isinstance(statement["Action"], str)
    }
    function = "arn:aws:lambda:us-east-1:123456789012:function:chat-relay-dev-relay"
    assert grants["lambda:UpdateAlias"] == [function, f"{function}:*"]
    assert grants["cloudwatch:DescribeAlarms"] == (
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:chat-relay-dev-*"
    )


def samconfig_overrides(environment: str) -> dict[str, str]:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    overrides = config[environment]["deploy"]["parameters"]["parameter_overrides"]
    return dict(pair.split("=", 1) for pair in overrides.split())


def test_each_environment_has_its_deployment_strategy_tracing_and_alarm_topic():
    dev, prod = samconfig_overrides("dev"), samconfig_overrides("prod")
    assert dev["DeploymentStrategy"] == "AllAtOnce"
    assert prod["DeploymentStrategy"].startswith(("Canary", "Linear"))
    assert prod["Tracing"] == "Active"
    # Prod names its topic: the one the CI access stack makes for it.
    topic = CI_ACCESS["Resources"]["ProdAlarmTopic"]["Properties"]["TopicName"]
    assert prod["AlarmTopicArn"] == topic["Fn::Sub"].replace("${StackNamePrefix}", "chat-relay")
    pattern = TEMPLATE["Parameters"]["AlarmTopicArn"]["AllowedPattern"]
    assert re.fullmatch(pattern, prod["AlarmTopicArn"])
    actions = alarms(AlarmTopicArn=prod["AlarmTopicArn"])["ErrorsAlarm"]["AlarmActions"]
    assert actions == ["arn:aws:sns:us-east-1:123456789012:chat-relay-prod-alarms"]


def test_a_stack_without_an_alarm_topic_says_so_in_its_outputs():
    assert "WARNING" in deployed()["Outputs"]["AlarmTopicMissing"]["Description"]
    topic = "arn:aws:sns:us-east-1:123456789012:relay-alarms"
    assert "AlarmTopicMissing" not in deployed(AlarmTopicArn=topic)["Outputs"]


def test_tracing_is_a_parameter_for_the_function_and_the_rest_stage():
    cfn = deployed(Tracing="Active", FrontDoor="RestApi")
    function = cfn["Resources"]["RelayFunction"]["Properties"]
    assert function["TracingConfig"] == {"Mode": "Active"}
    [stage] = of_type(cfn, "AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["TracingEnabled"] is True
    statements = [
        s
        for policy in cfn["Resources"]["RelayFunctionRole"]["Properties"]["Policies"]
        for s in policy["PolicyDocument"]["Statement"]
    ]
    assert any("xray:PutTraceSegments" in s["Action"] for s in statements)
    off = deployed()["Resources"]["RelayFunction"]["Properties"]
    assert off["TracingConfig"] == {"Mode": "PassThrough"}


def test_on_managed_instances_the_alias_moves_at_once():
    """CodeDeploy shifts the standard function's alias only: SAM leaves its application and
    group in a Managed Instances stack (without a condition), unused, so their role is there
    too and the stack deploys."""
    cfn = deployed(
        CapacityProvider="ManagedInstances",
        CapacityProviderSubnetIds="subnet-0a1b2c3d",
        CapacityProviderSecurityGroupIds="sg-0123abcd",
    )
    alias = cfn["Resources"]["RelayFunctionOnInstancesAliaslive"]
    assert "UpdatePolicy" not in alias
    [group] = of_type(cfn, "AWS::CodeDeploy::DeploymentGroup").values()
    role = group["Properties"]["ServiceRoleArn"]["Fn::GetAtt"][0]
    assert role in cfn["Resources"]  # every reference resolves
