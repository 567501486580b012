"""The CI access stack: only this repository's main branch and its `production` environment can
assume the deploy role; the role may do what deploying the relay stacks takes (checked against
the permissions CloudFormation's own resource schemas list for each resource the template
creates) and no more; the function roles it creates are capped by a permissions boundary."""

from __future__ import annotations

import copy
import tomllib
from functools import cache

import pytest
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from tests.cloudformation import (
    CI_ACCESS,
    ROOT,
    allows,
    as_list,
    deployed,
    evaluate,
    of_type,
    statements,
)

ACCOUNT, REGION = "123456789012", "us-east-1"
REPOSITORY = "octo-org/chat-relay"
BUCKET_ARN = "arn:aws:s3:::chat-relay-ci-artifactbucket-1a2b3c4d5e6f"
BOUNDARY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/chat-relay-function-boundary"
STACKS = ("chat-relay-dev", "chat-relay-prod")
CONTEXT = {"iam:PassedToService": "lambda.amazonaws.com", "iam:PermissionsBoundary": BOUNDARY_ARN}

# Permissions CloudFormation's handlers list that the deploy role does not get, because
# template.yaml uses none of the features they serve (or, for the last, must never have).
NOT_NEEDED = {
    "ec2:DescribeNetworkInterfaces": "no VPC",
    "ec2:DescribeSecurityGroups": "no VPC",
    "ec2:DescribeSubnets": "no VPC",
    "ec2:DescribeVpcs": "no VPC",
    "elasticfilesystem:DescribeMountTargets": "no file system",
    "s3files:ListMountTargets": "no file system",
    "kms:CreateGrant": "no customer key on the function or its log group",
    "kms:Decrypt": "no customer key on the function or its log group",
    "kms:DescribeKey": "no customer key on the function or its log group",
    "kms:Encrypt": "no customer key on the function or its log group",
    "kms:GenerateDataKey": "no customer key on the function or its log group",
    "lambda:PassCapacityProvider": "no capacity provider (Lambda Managed Instances)",
    "lambda:AssociateRuntimeAlias": "not an IAM action (cfn-lint rejects it in a policy)",
    "lambda:GetCodeSigningConfig": "no code signing config",
    "lambda:PutProvisionedConcurrencyConfig": "no provisioned concurrency (it costs by the hour)",
    "lambda:DeleteProvisionedConcurrencyConfig": "no provisioned concurrency",
    "codedeploy:CreateDeployment": "no gradual deployment (DeploymentPreference)",
    "codedeploy:GetDeployment": "no gradual deployment",
    "codedeploy:GetDeploymentConfig": "no gradual deployment",
    "codedeploy:GetDeploymentGroup": "no gradual deployment",
    "codedeploy:StopDeployment": "no gradual deployment",
    "logs:AssociateKmsKey": "no customer key on the log group",
    "logs:DisassociateKmsKey": "no customer key on the log group",
    "logs:PutDataProtectionPolicy": "no data protection policy",
    "logs:CreateLogDelivery": "no log delivery",
    "s3:REST.PUT.OBJECT": "no log delivery",
    "firehose:TagDeliveryStream": "no log delivery",
    "logs:PutIndexPolicy": "no field index policy",
    "logs:DeleteIndexPolicy": "no field index policy",
    "logs:PutResourcePolicy": "no log group resource policy",
    "logs:DeleteResourcePolicy": "no log group resource policy",
    "logs:PutBearerTokenAuthentication": "no bearer token ingestion",
    "logs:PutLogGroupDeletionProtection": "no deletion protection setting",
    "secretsmanager:ReplicateSecretToRegions": "no replicas: the key stays in one region",
    "iam:DeleteRolePermissionsBoundary": "never: it would lift the boundary",
}

# What `sam deploy` itself calls, besides what CloudFormation's handlers call.
SAM_DEPLOY = [
    "cloudformation:CreateChangeSet",
    "cloudformation:DescribeChangeSet",
    "cloudformation:ExecuteChangeSet",
    "cloudformation:DescribeStacks",
    "cloudformation:DescribeStackEvents",
    "cloudformation:GetTemplateSummary",
]


def ci_stack(template: dict | None = None) -> dict:
    return evaluate(
        template or CI_ACCESS,
        {
            "GitHubRepository": REPOSITORY,
            "ArtifactBucket.Arn": BUCKET_ARN,
            "FunctionBoundary": BOUNDARY_ARN,
        },
    )


def deploy_policy(template: dict | None = None) -> list[dict]:
    role = ci_stack(template)["Resources"]["DeployRole"]["Properties"]
    return [s for p in role["Policies"] for s in statements(p["PolicyDocument"])]


def boundary_policy() -> list[dict]:
    return statements(ci_stack()["Resources"]["FunctionBoundary"]["Properties"]["PolicyDocument"])


def examples(permission: str, stack: str) -> list[str]:
    """The ARNs a handler's call with this permission authorizes against, for `stack`."""
    service = permission.split(":")[0]
    if permission == "lambda:GetLayerVersion":
        return [f"arn:aws:lambda:{REGION}:753240598075:layer:LambdaAdapterLayerArm64:25"]
    return {
        "lambda": [
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{stack}-relay",
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{stack}-relay:live",
        ],
        "iam": [f"arn:aws:iam::{ACCOUNT}:role/{stack}-RelayFunctionRole-1A2B3C4D5E6F"],
        "logs": [
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{stack}-relay",
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{stack}-relay:*",
        ],
        "secretsmanager": [
            f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{stack}/openai-AbCdEf"
        ],
        "cloudwatch": [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{stack}-ErrorsAlarm-1A2B3C"],
        "s3": [f"{BUCKET_ARN}/{stack}/0123456789abcdef"],
        "cloudformation": [f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{stack}/0a1b2c3d"],
    }.get(service, [f"arn:aws:{service}:{REGION}:{ACCOUNT}:unknown/{stack}"])


@cache
def resource_types() -> frozenset[str]:
    """Every resource type template.yaml can create, over the switches that add resources."""
    combinations = [
        {},
        {"UrlAuthType": "AWS_IAM", "StreamingMode": "lwa", "EnableSnapStart": "true"},
        {"OpenAISecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:chat-relay-x-AbC"},
    ]
    return frozenset(
        r["Type"] for params in combinations for r in deployed(**params)["Resources"].values()
    )


def handler_permissions(kind: str) -> dict[str, set[str]]:
    handlers = PROVIDER_SCHEMA_MANAGER.get_resource_schema(REGION, kind).schema["handlers"]
    return {
        name: set(handlers.get(name, {}).get("permissions", []))
        for name in ("create", "read", "update", "delete")
    }


def missing_permissions(policy: list[dict]) -> set[tuple[str, str, str]]:
    missing = set()
    for kind in resource_types():
        for permissions in handler_permissions(kind).values():
            for permission in permissions - NOT_NEEDED.keys():
                for stack in STACKS:
                    for arn in examples(permission, stack):
                        if not allows(policy, permission, arn, CONTEXT):
                            missing.add((kind, permission, arn))
    return missing


def test_ci_role_is_limited_to_main_and_production():
    trust = CI_ACCESS["Resources"]["DeployRole"]["Properties"]["AssumeRolePolicyDocument"]
    [statement] = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    conditions = statement["Condition"]["StringEquals"]
    assert conditions["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    subjects = conditions["token.actions.githubusercontent.com:sub"]
    assert [s["Fn::Sub"] for s in subjects] == [
        "repo:${GitHubRepository}:ref:refs/heads/main",
        "repo:${GitHubRepository}:environment:production",
    ]


def test_the_template_creates_only_resource_types_the_role_was_checked_for():
    assert resource_types() == {
        "AWS::SecretsManager::Secret",
        "AWS::Logs::LogGroup",
        "AWS::IAM::Role",
        "AWS::Lambda::Function",
        "AWS::Lambda::Version",
        "AWS::Lambda::Alias",
        "AWS::Lambda::Url",
        "AWS::Lambda::Permission",
        "AWS::CloudWatch::Alarm",
    }


def test_the_deploy_role_may_do_what_cloudformation_needs_for_every_resource():
    assert missing_permissions(deploy_policy()) == set()


def test_the_coverage_check_catches_a_missing_permission():
    broken = copy.deepcopy(CI_ACCESS)
    policy = broken["Resources"]["DeployRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    functions = next(s for s in policy["Statement"] if s["Sid"] == "TheRelayFunction")
    functions["Action"].remove("lambda:GetPolicy")
    assert {p for _, p, _ in missing_permissions(deploy_policy(broken))} == {"lambda:GetPolicy"}


@pytest.mark.parametrize("permission", sorted(NOT_NEEDED))
def test_the_deploy_role_lacks_what_the_template_does_not_use(permission):
    for arn in examples(permission, STACKS[0]):
        assert not allows(deploy_policy(), permission, arn, CONTEXT)


@pytest.mark.parametrize("stack", STACKS)
def test_sam_deploy_can_run_on_both_stacks(stack):
    policy = deploy_policy()
    [arn] = examples("cloudformation:x", stack)
    for action in SAM_DEPLOY:
        assert allows(policy, action, arn), action
    transform = f"arn:aws:cloudformation:{REGION}:aws:transform/Serverless-2016-10-31"
    assert allows(policy, "cloudformation:CreateChangeSet", transform)
    assert allows(policy, "s3:PutObject", f"{BUCKET_ARN}/{stack}/template.yaml")


def test_the_deploy_role_cannot_widen_its_own_access():
    policy = deploy_policy()
    # Not the CI stack (or any stack but the two), nor its role, nor deleting a stack.
    ci = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/chat-relay-ci/0a1b2c3d"
    assert not allows(policy, "cloudformation:CreateChangeSet", ci)
    assert not allows(
        policy, "cloudformation:DeleteStack", examples("cloudformation:x", STACKS[0])[0]
    )
    ci_role = f"arn:aws:iam::{ACCOUNT}:role/chat-relay-ci-DeployRole-1A2B3C"
    for action in ("iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:AttachRolePolicy"):
        assert not allows(policy, action, ci_role, CONTEXT), action
    # A function role without the boundary, or with another one, cannot be made or changed.
    [role] = examples("iam:x", STACKS[0])
    admin = {"iam:PermissionsBoundary": "arn:aws:iam::aws:policy/AdministratorAccess"}
    for action in ("iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy"):
        assert allows(policy, action, role, CONTEXT), action
        assert not allows(policy, action, role), action
        assert not allows(policy, action, role, admin), action
    # A role can be passed to Lambda only.
    assert not allows(policy, "iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"})


def test_only_unscopable_actions_get_a_wildcard_resource():
    for statement in deploy_policy():
        if "*" in as_list(statement["Resource"]):
            assert set(as_list(statement["Action"])) <= {
                "secretsmanager:GetRandomPassword",
                "cloudformation:ValidateTemplate",
                "logs:DescribeLogGroups",
                "logs:DescribeResourcePolicies",
                "logs:DescribeIndexPolicies",
            }


def function_needs(stack: str) -> list[tuple[str, str, dict]]:
    """(action, resource, context) for everything the deployed function role is granted."""
    secret = examples("secretsmanager:x", stack)[0]
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    cfn = deployed(PermissionsBoundaryName="chat-relay-function-boundary", SecretKmsKeyArn=key)
    cfn = evaluate(cfn, {"OpenAISecret": secret, "AWS::StackName": stack})
    [role] = of_type(cfn, "AWS::IAM::Role").values()
    assert role["Properties"]["ManagedPolicyArns"] == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ]
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{stack}-relay"
    needs = [
        ("logs:CreateLogStream", f"{group}:*", {}),
        ("logs:PutLogEvents", f"{group}:log-stream:2026/01/01/[$LATEST]0123abcd", {}),
    ]
    for policy in role["Properties"]["Policies"]:
        for statement in statements(policy["PolicyDocument"]):
            context = {k: v for t in statement.get("Condition", {}).values() for k, v in t.items()}
            needs += [(statement["Action"], statement["Resource"], context)]
    return needs


@pytest.mark.parametrize("stack", STACKS)
def test_the_boundary_lets_the_function_do_its_work_and_nothing_else(stack):
    boundary = boundary_policy()
    needs = function_needs(stack)
    assert {action for action, _, _ in needs} >= {"secretsmanager:GetSecretValue", "kms:Decrypt"}
    for action, resource, context in needs:
        assert allows(boundary, action, resource, context), (action, resource)
    other_secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:payments/db-AbCdEf"
    assert not allows(boundary, "secretsmanager:GetSecretValue", other_secret)
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert not allows(
        boundary, "kms:Decrypt", key, {"kms:ViaService": "s3.us-east-1.amazonaws.com"}
    )
    assert not allows(boundary, "iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/x")


def test_samconfig_deploys_the_two_stacks_with_the_boundary():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    boundary_name = BOUNDARY_ARN.rsplit("/", 1)[1]
    for environment, stack in zip(("dev", "prod"), STACKS, strict=True):
        deploy = config[environment]["deploy"]["parameters"]
        assert deploy["stack_name"] == stack
        overrides = dict(pair.split("=", 1) for pair in deploy["parameter_overrides"].split())
        assert overrides["PermissionsBoundaryName"] == boundary_name
