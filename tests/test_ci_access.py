"""The CI access stack: one deploy role per environment, dev's for this repository's main branch
and prod's for its `production` environment only; each may do what deploying its own relay stack
takes (checked against the permissions CloudFormation's own resource schemas list for each
resource the template creates) and no more, nothing on the other stack; the function roles it
creates are capped by its environment's permissions boundary; the package bucket is versioned."""

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
    as_principal,
    deployed,
    evaluate,
    of_type,
    statements,
)

ACCOUNT, REGION = "123456789012", "us-east-1"
REPOSITORY = "octo-org/chat-relay"
BUCKET_ARN = "arn:aws:s3:::chat-relay-ci-artifactbucket-1a2b3c4d5e6f"
ENVIRONMENTS = ("dev", "prod")
STACKS = ("chat-relay-dev", "chat-relay-prod")
STACK_OF = dict(zip(ENVIRONMENTS, STACKS, strict=True))


def boundary_arn(environment: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:policy/chat-relay-{environment}-function-boundary"


def context(environment: str) -> dict[str, str]:
    """What a function role of this environment is created and passed with."""
    return {
        "iam:PassedToService": "lambda.amazonaws.com",
        "iam:PermissionsBoundary": boundary_arn(environment),
        "aws:ResourceAccount": ACCOUNT,
    }


# Permissions CloudFormation's handlers list that the deploy role does not get, because
# template.yaml uses none of the features they serve (or, for the last, must never have).
NOT_NEEDED = {
    "ec2:DescribeNetworkInterfaces": "no VPC",
    "ec2:DescribeSecurityGroups": "no VPC",
    "ec2:DescribeSubnets": "no VPC",
    "ec2:DescribeVpcs": "no VPC",
    "elasticfilesystem:DescribeMountTargets": "no file system",
    "s3files:ListMountTargets": "no file system",
    "kms:CreateGrant": "no customer key on the function, its log group or the quota table",
    "kms:Decrypt": "no customer key on the function, its log group or the quota table",
    "kms:DescribeKey": "no customer key on the function, its log group or the quota table",
    "kms:Encrypt": "no customer key on the function, its log group or the quota table",
    "kms:GenerateDataKey": "no customer key on the function, its log group or the quota table",
    "kms:ListAliases": "no customer key on the quota table",
    "kms:RevokeGrant": "no customer key on the quota table",
    "dynamodb:AssociateTableReplica": "no global table replicas",
    "dynamodb:CreateTableReplica": "no global table replicas",
    "iam:CreateServiceLinkedRole": "no replicas or auto scaling on the table (on-demand)",
    "dynamodb:ImportTable": "no table import from S3",
    "dynamodb:DescribeImport": "no table import from S3",
    "s3:GetObjectMetadata": "no table import from S3",
    "logs:CreateLogStream": "no table import from S3 (it logs its errors)",
    "logs:DescribeLogStreams": "no table import from S3 (it logs its errors)",
    "logs:PutLogEvents": "no table import from S3 (it logs its errors)",
    "dynamodb:EnableKinesisStreamingDestination": "no Kinesis stream of the table's changes",
    "dynamodb:DisableKinesisStreamingDestination": "no Kinesis stream of the table's changes",
    "dynamodb:UpdateKinesisStreamingDestination": "no Kinesis stream of the table's changes",
    "kinesis:DescribeStream": "no Kinesis stream of the table's changes",
    "kinesis:PutRecords": "no Kinesis stream of the table's changes",
    "dynamodb:PutResourcePolicy": "no table resource policy",
    "dynamodb:DeleteResourcePolicy": "no table resource policy",
    "dynamodb:BatchWriteItem": "the deploy role never touches the counters (the function does)",
    "dynamodb:DeleteItem": "the deploy role never touches the counters (the function does)",
    "dynamodb:GetItem": "the deploy role never touches the counters (the function does)",
    "dynamodb:PutItem": "the deploy role never touches the counters (the function does)",
    "dynamodb:Query": "the deploy role never touches the counters (the function does)",
    "dynamodb:Scan": "the deploy role never touches the counters (the function does)",
    "dynamodb:UpdateItem": "the deploy role never touches the counters (the function does)",
    "lambda:PassCapacityProvider": "no capacity provider (Lambda Managed Instances)",
    "lambda:AssociateRuntimeAlias": "not an IAM action (cfn-lint rejects it in a policy)",
    "lambda:GetCodeSigningConfig": "no code signing config",
    "lambda:PutProvisionedConcurrencyConfig": "no provisioned concurrency (it costs by the hour)",
    "lambda:DeleteProvisionedConcurrencyConfig": "no provisioned concurrency",
    "codedeploy:RegisterOnPremisesInstance": "no on-premises instances (Lambda deployments)",
    "apigateway:UpdateRestApiPolicy": "no resource policy on the REST API",
    "wafv2:GetPermissionPolicy": "no WAF policy shared with other accounts",
    "wafv2:PutPermissionPolicy": "no WAF policy shared with other accounts",
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

# WAF association handlers list the calls for every kind of resource a web ACL can protect;
# the relay associates one with its REST API stage only.
NOT_NEEDED |= {
    permission: "the web ACL protects a REST API stage only"
    for permission in (
        "amplify:AssociateWebACL",
        "amplify:DisassociateWebACL",
        "amplify:GetWebACLForResource",
        "apprunner:AssociateWebAcl",
        "apprunner:DescribeWebAclForService",
        "apprunner:DisassociateWebAcl",
        "appsync:AssociateWebACL",
        "appsync:DisassociateWebACL",
        "appsync:GetWebACLForResource",
        "appsync:SetWebACL",
        "bedrock-agentcore:GatewayAssociateWebACL",
        "bedrock-agentcore:GatewayDisassociateWebACL",
        "bedrock-agentcore:GatewayGetWebACLForResource",
        "cognito-idp:AssociateWebACL",
        "cognito-idp:DisassociateWebACL",
        "cognito-idp:GetWebACLForResource",
        "ec2:AssociateVerifiedAccessInstanceWebAcl",
        "ec2:DescribeVerifiedAccessInstanceWebAclAssociations",
        "ec2:DisassociateVerifiedAccessInstanceWebAcl",
        "ec2:GetVerifiedAccessInstanceWebAcl",
        "elasticloadbalancing:CreateWebACLAssociation",
        "elasticloadbalancing:DeleteWebACLAssociation",
        "elasticloadbalancing:GetLoadBalancerWebACL",
        "elasticloadbalancing:SetWebACL",
    )
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


def ci_stack(template: dict | None = None, rest_api_door: str = "true") -> dict:
    return evaluate(
        template or CI_ACCESS,
        {
            "GitHubRepository": REPOSITORY,
            "ArtifactBucket.Arn": BUCKET_ARN,
            "RestApiDoor": rest_api_door,
        },
    )


def role(environment: str) -> dict:
    return ci_stack()["Resources"][f"{environment.title()}DeployRole"]["Properties"]


def deploy_policy(
    environment: str, template: dict | None = None, rest_api_door: str = "true"
) -> list[dict]:
    """The deploy policies as IAM applies them to this environment's role (by the role's tag):
    the deploy policy, and the REST API door's when the CI stack grants it."""
    resources = ci_stack(template, rest_api_door)["Resources"]
    found = statements(resources["DeployPolicy"]["Properties"]["PolicyDocument"])
    rest = resources.get("RestApiDeployPolicy")
    if rest is not None:
        assert {r["Ref"] for r in rest["Properties"]["Roles"]} == {
            "DevDeployRole",
            "ProdDeployRole",
        }
        found += statements(rest["Properties"]["PolicyDocument"])
    tags = {tag["Key"]: tag["Value"] for tag in role(environment)["Tags"]}
    assert tags == {"relay-environment": environment}
    return as_principal(found, tags)


def boundary_policy(environment: str) -> list[dict]:
    boundary = ci_stack()["Resources"][f"{environment.title()}FunctionBoundary"]
    return statements(boundary["Properties"]["PolicyDocument"])


def examples(permission: str, stack: str) -> list[str]:
    """The ARNs a handler's call with this permission authorizes against, for `stack`."""
    service = permission.split(":")[0]
    if service == "codedeploy":
        if permission == "codedeploy:GetDeploymentConfig":
            return [
                f"arn:aws:codedeploy:{REGION}:{ACCOUNT}:deploymentconfig:CodeDeployDefault.LambdaAllAtOnce"
            ]
        application = f"{stack}-ServerlessDeploymentApplication-1A2B3C"
        return [
            f"arn:aws:codedeploy:{REGION}:{ACCOUNT}:application:{application}",
            f"arn:aws:codedeploy:{REGION}:{ACCOUNT}:deploymentgroup:{application}/"
            f"{stack}-RelayFunctionDeploymentGroup-4D5E6F",
        ]
    if permission == "apigateway:SetWebACL":
        return [f"arn:aws:apigateway:{REGION}::/restapis/a1b2c3d4e5/stages/live"]
    if service == "apigateway":
        # API Gateway's ids are random: nothing in them names the stack.
        return [
            f"arn:aws:apigateway:{REGION}::/restapis/a1b2c3d4e5",
            f"arn:aws:apigateway:{REGION}::/restapis/a1b2c3d4e5/stages/live",
            f"arn:aws:apigateway:{REGION}::/usageplans/x9y8z7",
        ]
    if service == "wafv2":
        return [f"arn:aws:wafv2:{REGION}:{ACCOUNT}:regional/webacl/relay/0a1b2c3d"]
    if permission == "lambda:GetLayerVersion":
        return [f"arn:aws:lambda:{REGION}:753240598075:layer:LambdaAdapterLayerArm64:25"]
    alarm = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{stack}-ErrorsAlarm-1A2B3C"
    dashboard = f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/{stack}-relay"
    if service == "cloudwatch" and "Dashboard" in permission:
        return [dashboard]
    if permission in (
        "cloudwatch:ListTagsForResource",
        "cloudwatch:TagResource",
        "cloudwatch:UntagResource",
    ):
        return [alarm, dashboard]
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
        "cloudwatch": [alarm],
        "dynamodb": [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{stack}-quota"],
        "s3": [f"{BUCKET_ARN}/{stack}/packages/0a1b2c3/0123456789abcdef"],
        "cloudformation": [f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{stack}/0a1b2c3d"],
    }.get(service, [f"arn:aws:{service}:{REGION}:{ACCOUNT}:unknown/{stack}"])


@cache
def resource_types() -> frozenset[str]:
    """Every resource type template.yaml can create, over the switches that add resources."""
    combinations = [
        {},
        {"UrlAuthType": "AWS_IAM", "StreamingMode": "lwa", "EnableSnapStart": "true"},
        {"TokenAlarmPerHour": "1000000", "Tracing": "Active"},
        {
            "FrontDoor": "RestApi",
            "AllowedOrigins": "https://chat.example.com",
            "WebAclArn": f"arn:aws:wafv2:{REGION}:{ACCOUNT}:regional/webacl/relay/0a1b2c3d",
            "DomainName": "chat.example.com",
            "CertificateArn": f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/1234abcd-12ab",
        },
        {
            "OpenAISecretArn": (
                f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:chat-relay-dev/x-AbCdEf"
            )
        },
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


def handler_calls() -> set[tuple[str, str]]:
    """(resource type, permission) for every call CloudFormation's handlers make."""
    return {
        (kind, permission)
        for kind in resource_types()
        for permissions in handler_permissions(kind).values()
        for permission in permissions - NOT_NEEDED.keys()
    }


def missing_permissions(environment: str, template: dict | None = None) -> set:
    policy = deploy_policy(environment, template)
    return {
        (kind, permission, arn)
        for kind, permission in handler_calls()
        for arn in examples(permission, STACK_OF[environment])
        if not allows(policy, permission, arn, context(environment))
    }


@pytest.mark.parametrize(
    ("environment", "subject"),
    [
        ("dev", "repo:octo-org/chat-relay:ref:refs/heads/main"),
        ("prod", "repo:octo-org/chat-relay:environment:production"),
    ],
)
def test_each_environment_deploys_through_a_role_of_its_own(environment, subject):
    [statement] = role(environment)["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"  # and no sts:TagSession
    assert set(statement["Condition"]) == {"StringEquals"}
    assert statement["Condition"]["StringEquals"] == {
        "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
        "token.actions.githubusercontent.com:sub": subject,
    }
    assert set(of_type(ci_stack(), "AWS::IAM::Role")) == {"DevDeployRole", "ProdDeployRole"}


@pytest.mark.parametrize(("environment", "other"), [("dev", "prod"), ("prod", "dev")])
def test_neither_role_can_touch_the_other_environment(environment, other):
    policy = deploy_policy(environment)
    reachable = {
        (permission, arn)
        for _, permission in handler_calls()
        for arn in examples(permission, STACK_OF[other])
        if allows(policy, permission, arn, context(other))
        or allows(policy, permission, arn, context(environment))
    }
    # Only the shared package bucket, AWS's public adapter layer and the calls IAM cannot
    # scope to a resource.
    shared = {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:ListBucket",  # listed by the quota table's handlers (for imports we never do)
        "lambda:GetLayerVersion",
        "codedeploy:GetDeploymentConfig",  # AWS's predefined configurations
    }
    # With the REST API door granted: API Gateway's ids name no stack (docs/deploy.md).
    rest_door = {p for p in REST_API_DOOR if p.startswith(("apigateway:", "wafv2:"))}
    assert {p for p, _ in reachable} <= shared | UNSCOPABLE | rest_door
    without_rest_door = deploy_policy(environment, rest_api_door="false")
    assert not any(allows(without_rest_door, p, arn) for p in rest_door for arn in examples(p, "x"))
    # Neither writes a package of the other, or the other's uploads.
    other_upload = f"{BUCKET_ARN}/{STACK_OF[other]}/packages/0a1b2c3/0123456789abcdef"
    assert not allows(policy, "s3:PutObject", other_upload)
    secret = examples("secretsmanager:x", STACK_OF[other])[0]
    assert not allows(policy, "secretsmanager:GetSecretValue", secret)
    # Its function roles only with its own boundary, never the other's (which reads the
    # other environment's secrets).
    [own_role] = examples("iam:x", STACK_OF[environment])
    assert not allows(policy, "iam:CreateRole", own_role, context(other))
    assert allows(policy, "iam:CreateRole", own_role, context(environment))


def test_the_package_bucket_keeps_versions_by_count_not_age():
    """A rollback needs the package of the version it returns to, however old: nothing current
    expires, and an overwritten key keeps its last versions whatever their age."""
    bucket = ci_stack()["Resources"]["ArtifactBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert not any("ExpirationInDays" in r or "ExpirationDate" in r for r in rules)
    [kept] = [r for r in rules if "NoncurrentVersionExpiration" in r]
    assert int(kept["NoncurrentVersionExpiration"]["NewerNoncurrentVersions"]) >= 5
    assert CI_ACCESS["Parameters"]["PackageVersionsKept"]["Default"] >= 5


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
        "AWS::CloudWatch::Dashboard",
        "AWS::DynamoDB::Table",
        "AWS::CodeDeploy::Application",
        "AWS::CodeDeploy::DeploymentGroup",
        "AWS::ApiGateway::RestApi",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::Stage",
        "AWS::ApiGateway::ApiKey",
        "AWS::ApiGateway::UsagePlan",
        "AWS::ApiGateway::UsagePlanKey",
        "AWS::ApiGateway::DomainName",
        "AWS::ApiGateway::BasePathMapping",
        "AWS::WAFv2::WebACLAssociation",
    }


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_deploy_role_may_do_what_cloudformation_needs_for_every_resource(environment):
    assert missing_permissions(environment) == set()


def test_the_coverage_check_catches_a_missing_permission():
    broken = copy.deepcopy(CI_ACCESS)
    policy = broken["Resources"]["DeployPolicy"]["Properties"]["PolicyDocument"]
    functions = next(s for s in policy["Statement"] if s["Sid"] == "TheRelayFunction")
    functions["Action"].remove("lambda:GetPolicy")
    assert {p for _, p, _ in missing_permissions("dev", broken)} == {"lambda:GetPolicy"}


@pytest.mark.parametrize("permission", sorted(NOT_NEEDED))
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_deploy_role_lacks_what_the_template_does_not_use(environment, permission):
    for arn in examples(permission, STACK_OF[environment]):
        assert not allows(deploy_policy(environment), permission, arn, context(environment))


@pytest.mark.parametrize(("environment", "stack"), zip(ENVIRONMENTS, STACKS, strict=True))
def test_sam_deploy_can_run_on_its_stack(environment, stack):
    policy = deploy_policy(environment)
    [arn] = examples("cloudformation:x", stack)
    for action in SAM_DEPLOY:
        assert allows(policy, action, arn), action
    transform = f"arn:aws:cloudformation:{REGION}:aws:transform/Serverless-2016-10-31"
    assert allows(policy, "cloudformation:CreateChangeSet", transform)
    assert allows(policy, "s3:PutObject", f"{BUCKET_ARN}/{stack}/template.yaml")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_deploy_role_cannot_widen_its_own_access(environment):
    policy = deploy_policy(environment)
    own = context(environment)
    # Not the CI stack (or any stack but its own), nor its role, nor deleting a stack.
    ci = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/chat-relay-ci/0a1b2c3d"
    assert not allows(policy, "cloudformation:CreateChangeSet", ci)
    assert not allows(
        policy,
        "cloudformation:DeleteStack",
        examples("cloudformation:x", STACK_OF[environment])[0],
    )
    for name in ("DevDeployRole", "ProdDeployRole"):
        ci_role = f"arn:aws:iam::{ACCOUNT}:role/chat-relay-ci-{name}-1A2B3C"
        for action in ("iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:AttachRolePolicy"):
            assert not allows(policy, action, ci_role, own), action
    # A function role without the boundary, or with another one, cannot be made or changed.
    [function_role] = examples("iam:x", STACK_OF[environment])
    admin = {"iam:PermissionsBoundary": "arn:aws:iam::aws:policy/AdministratorAccess"}
    for action in ("iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy"):
        assert allows(policy, action, function_role, own), action
        assert not allows(policy, action, function_role), action
        assert not allows(policy, action, function_role, admin), action
    # A role can be passed to Lambda only.
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert not allows(policy, "iam:PassRole", function_role, to_ec2)


REST_API_DOOR = {
    "apigateway:GET",
    "apigateway:POST",
    "apigateway:PUT",
    "apigateway:PATCH",
    "apigateway:DELETE",
    "apigateway:SetWebACL",
    "wafv2:AssociateWebACL",
    "wafv2:DisassociateWebACL",
    "wafv2:GetWebACL",
    "wafv2:GetWebACLForResource",
}

UNSCOPABLE = {
    "codedeploy:ListApplications",
    "secretsmanager:GetRandomPassword",
    "cloudformation:ValidateTemplate",
    "logs:DescribeLogGroups",
    "logs:DescribeResourcePolicies",
    "logs:DescribeIndexPolicies",
}


def test_only_unscopable_actions_get_a_wildcard_resource():
    for statement in deploy_policy("dev"):
        if "*" in as_list(statement["Resource"]):
            assert set(as_list(statement["Action"])) <= UNSCOPABLE


def function_needs(environment: str) -> list[tuple[str, str, dict]]:
    """(action, resource, context) for everything the deployed function role is granted."""
    stack = STACK_OF[environment]
    secret = examples("secretsmanager:x", stack)[0]
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    boundary = boundary_arn(environment).rsplit("/", 1)[1]
    cfn = deployed(PermissionsBoundaryName=boundary, SecretKmsKeyArn=key, Tracing="Active")
    table = examples("dynamodb:x", stack)[0]
    cfn = evaluate(cfn, {"OpenAISecret": secret, "QuotaTable.Arn": table, "AWS::StackName": stack})
    role = cfn["Resources"]["RelayFunctionRole"]
    assert role["Properties"]["ManagedPolicyArns"] == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ]
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{stack}-relay"
    needs = [
        ("logs:CreateLogStream", f"{group}:*", {}),
        ("logs:PutLogEvents", f"{group}:log-stream:2026/01/01/[$LATEST]0123abcd", {}),
    ]
    # CodeDeploy's role for the gradual deployment is capped by the same boundary.
    for name in ("RelayFunctionRole", "RelayDeploymentRole"):
        for policy in cfn["Resources"][name]["Properties"]["Policies"]:
            for statement in statements(policy["PolicyDocument"]):
                context = {
                    k: v for t in statement.get("Condition", {}).values() for k, v in t.items()
                }
                for action in as_list(statement["Action"]):
                    for resource in as_list(statement["Resource"]):
                        # (`deployed` named the stack chat-relay-dev in its own Subs)
                        resource = resource.replace("chat-relay-dev", stack)
                        needs += [(action, resource.replace("*", "1A2B"), context)]
    return needs


@pytest.mark.parametrize(("environment", "other"), [("dev", "prod"), ("prod", "dev")])
def test_the_boundary_lets_the_function_do_its_work_and_nothing_else(environment, other):
    boundary = boundary_policy(environment)
    needs = function_needs(environment)
    assert {action for action, _, _ in needs} >= {
        "secretsmanager:GetSecretValue",
        "kms:Decrypt",
        "dynamodb:UpdateItem",
        "xray:PutTraceSegments",
        "lambda:UpdateAlias",
        "cloudwatch:DescribeAlarms",
    }
    for action, resource, context in needs:
        assert allows(boundary, action, resource, context), (action, resource)
    other_secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:payments/db-AbCdEf"
    assert not allows(boundary, "secretsmanager:GetSecretValue", other_secret)
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert not allows(
        boundary, "kms:Decrypt", key, {"kms:ViaService": "s3.us-east-1.amazonaws.com"}
    )
    assert not allows(boundary, "iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/x")
    # A function of one environment pointed at the other's secret still cannot read it.
    other_environment_secret = examples("secretsmanager:x", STACK_OF[other])[0]
    assert not allows(boundary, "secretsmanager:GetSecretValue", other_environment_secret)
    # Nor count in the other's quota table, nor in any other table, nor read its own.
    own_table = examples("dynamodb:x", STACK_OF[environment])[0]
    other_table = examples("dynamodb:x", STACK_OF[other])[0]
    assert not allows(boundary, "dynamodb:UpdateItem", other_table)
    assert not allows(
        boundary, "dynamodb:UpdateItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/payments"
    )
    assert not allows(boundary, "dynamodb:Scan", own_table)
    assert allows(boundary, "dynamodb:GetItem", own_table)
    assert not allows(boundary, "dynamodb:GetItem", other_table)


@pytest.mark.parametrize(("environment", "other"), [("dev", "prod"), ("prod", "dev")])
def test_a_trust_policy_changes_only_on_bounded_roles_inside_the_account(environment, other):
    """Who may assume a role is its trust policy: neither deploy role may rewrite one except on
    a role that carries its own environment's boundary, in this account."""
    policy = deploy_policy(environment)
    [own_role] = examples("iam:x", STACK_OF[environment])
    action = "iam:UpdateAssumeRolePolicy"
    assert allows(policy, action, own_role, context(environment))
    assert not allows(policy, action, own_role)  # no boundary on the role
    assert not allows(policy, action, own_role, context(other))  # the other's boundary
    elsewhere = context(environment) | {"aws:ResourceAccount": "210987654321"}
    assert not allows(policy, action, own_role, elsewhere)
    for statement in policy:
        if action in as_list(statement["Action"]) or "iam:*" in as_list(statement["Action"]):
            assert set(statement["Condition"]["StringEquals"]) == {
                "iam:PermissionsBoundary",
                "aws:ResourceAccount",
            }


def test_samconfig_deploys_each_stack_with_its_environments_boundary():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for environment, stack in STACK_OF.items():
        deploy = config[environment]["deploy"]["parameters"]
        assert deploy["stack_name"] == stack
        overrides = dict(pair.split("=", 1) for pair in deploy["parameter_overrides"].split())
        assert overrides["PermissionsBoundaryName"] == boundary_arn(environment).rsplit("/", 1)[1]
