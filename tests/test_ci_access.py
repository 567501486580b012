"""The CI access stack: only this repository's main branch and its `production` environment can
assume the deploy role."""

from __future__ import annotations

from tests.cloudformation import CI_ACCESS


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
