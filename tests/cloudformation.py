"""What a template deploys for given parameters, and what an IAM policy allows, without AWS.

The SAM transform runs offline (aws-sam-translator); conditions, `Fn::If`, `Fn::Sub` and parameter
references are then evaluated the way CloudFormation would for the few forms our stacks use.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.utils.py27hash_fix import (
    to_py27_compatible_template,
    undo_mark_unicode_str_in_template,
)
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = yaml_parse((ROOT / "template.yaml").read_text())
CI_ACCESS = yaml_parse((ROOT / "infra" / "ci-access.yaml").read_text())

# The account and region the examples deploy into.
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "chat-relay-dev",
    "AWS::URLSuffix": "amazonaws.com",
}
_NO_VALUE = object()


def managed_policies() -> dict[str, str]:
    """SAM asks for the ARNs of AWS managed policies; these are the ones it may attach."""
    return {
        "AWSLambdaBasicExecutionRole": (
            "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
        )
    }


def transformed(template: dict | None = None, **parameters: str) -> dict:
    """The template as CloudFormation sees it after `sam package` and the SAM transform (what
    `samtranslator.translator.transform.transform` does, with the region given, not looked up)."""
    template = copy.deepcopy(template or TEMPLATE)
    for resource in template["Resources"].values():
        # (a packaged template's own CodeUri, an S3 location, stays)
        if (
            resource["Type"] == "AWS::Serverless::Function"
            and resource["Properties"].get("CodeUri") == "."
        ):
            resource["Properties"]["CodeUri"] = "s3://artifacts/relay.zip"
    parameters = dict(parameters)
    to_py27_compatible_template(template, parameters)
    session = boto3.session.Session(region_name=PSEUDO["AWS::Region"])
    translator = Translator(None, Parser(), boto_session=session)
    result = translator.translate(
        template, parameter_values=parameters, get_managed_policy_map=managed_policies
    )
    return undo_mark_unicode_str_in_template(result)


def deployed(template: dict | None = None, **parameters: str) -> dict:
    """The transformed template with these parameters filled in: resources and outputs whose
    condition is false are gone, `Fn::If` branches chosen, `AWS::NoValue` removed, parameter
    references, `Fn::Sub` over parameters and pseudo parameters, and `Fn::Split` evaluated."""
    cfn = transformed(template, **parameters)
    return evaluate(cfn, parameters)


def evaluate(cfn: dict, parameters: dict[str, str]) -> dict:
    """`cfn` with `parameters` filled in (see `deployed`). Values for other references, such as
    another resource's `Ref` or `"Resource.Attribute"` for `Fn::GetAtt`, may be passed too."""
    values = {name: str(spec.get("Default", "")) for name, spec in cfn["Parameters"].items()}
    values |= {k: str(v) for k, v in parameters.items()}
    values |= PSEUDO
    conditions: dict[str, bool] = {}

    def condition(name: str) -> bool:
        if name not in conditions:
            conditions[name] = test(cfn["Conditions"][name])
        return conditions[name]

    def test(expression: Any) -> bool:
        [(function, argument)] = expression.items()
        if function == "Fn::Equals":
            left, right = (resolve(a) for a in argument)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not test(argument[0])
        if function == "Fn::And":
            return all(test(a) for a in argument)
        if function == "Fn::Or":
            return any(test(a) for a in argument)
        if function == "Condition":
            return condition(argument)
        raise ValueError(f"cannot evaluate {expression}")

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [r for r in map(resolve, node) if r is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            [(key, argument)] = node.items()
            if key == "Ref" and argument == "AWS::NoValue":
                return _NO_VALUE
            if key == "Ref" and argument in values:
                return values[argument]
            if key == "Fn::If":
                name, when_true, when_false = argument
                return resolve(when_true if condition(name) else when_false)
            if key == "Fn::GetAtt" and ".".join(argument) in values:
                return values[".".join(argument)]
            if key == "Fn::Sub" and isinstance(argument, str):
                # `${!Literal}` is CloudFormation's escape for a `${Literal}` IAM policy variable.
                return re.sub(
                    r"\$\{(!?)([\w:./-]+)\}",
                    lambda m: "${" + m[2] + "}" if m[1] else values.get(m[2], m[0]),
                    argument,
                )
            if key == "Fn::Split":
                separator, text = argument[0], resolve(argument[1])
                return text.split(separator) if isinstance(text, str) else node
            if key == "Fn::Select":
                index, items = int(resolve(argument[0])), resolve(argument[1])
                return items[index] if isinstance(items, list) else node
        return {k: r for k, v in node.items() if (r := resolve(v)) is not _NO_VALUE}

    result = dict(cfn)
    for section in ("Resources", "Outputs"):
        result[section] = {
            name: resolve({k: v for k, v in body.items() if k != "Condition"})
            for name, body in cfn.get(section, {}).items()
            if "Condition" not in body or condition(body["Condition"])
        }
    return result


def of_type(cfn: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == kind}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def statements(document: dict) -> list[dict]:
    return as_list(document.get("Statement", []))


def allows(
    policy: list[dict], action: str, resource: str, context: dict[str, str] | None = None
) -> bool:
    """Whether these (resolved) statements allow `action` on `resource`: an Allow matches and
    no Deny does. Conditions: StringEquals/StringLike/ArnLike on keys given in `context`; a
    condition on a key the context does not have does not hold."""
    context = context or {}

    def matches(statement: dict) -> bool:
        if not any(_like(action, a, case=False) for a in as_list(statement.get("Action", []))):
            return False
        if not any(_like(resource, r) for r in as_list(statement.get("Resource", []))):
            return False
        for operator, tests in statement.get("Condition", {}).items():
            if operator not in ("StringEquals", "StringLike", "ArnLike", "ArnEquals"):
                return False
            for key, expected in tests.items():
                if key not in context:
                    return False
                exact = operator in ("StringEquals", "ArnEquals")
                if not any(
                    context[key] == e if exact else _like(context[key], e)
                    for e in as_list(expected)
                ):
                    return False
        return True

    hits = [s for s in policy if matches(s)]
    return any(s["Effect"] == "Allow" for s in hits) and not any(
        s["Effect"] == "Deny" for s in hits
    )


def _like(value: str, pattern: str, case: bool = True) -> bool:
    if not case:
        value, pattern = value.lower(), pattern.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def as_principal(policy: list[dict], tags: dict[str, str]) -> list[dict]:
    """The statements as IAM applies them to a principal with these tags: each
    `${aws:PrincipalTag/key}` policy variable replaced by the tag's value."""
    text = json.dumps(policy)
    for key, value in tags.items():
        text = text.replace("${aws:PrincipalTag/" + key + "}", value)
    return json.loads(text)
