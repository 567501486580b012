"""Every setting an operator may need can be set through the template: each field of `Settings`
reaches the function as an environment variable the template writes (from a parameter, or from
the stack itself), or is on the short list of settings that only make sense off Lambda or that
Lambda sets itself. Each parameter has a description, allowed values or a pattern, and one
place in the console's parameter groups; a value the template writes is one the relay accepts.

Adding a setting to handler/settings.py? This test fails until you do one of these:
- give it a parameter: in template.yaml add the parameter (Description, and AllowedValues,
  AllowedPattern or MinValue/MaxValue), put it in one of the ParameterGroups of
  Metadata/AWS::CloudFormation::Interface, and pass it in Globals/Function/Environment/Variables
  as the setting's upper-case name (`!Ref YourParameter`, or `!If` for an optional one);
- or, if an operator never sets it on Lambda, add it to LOCAL_ONLY (or SET_BY_LAMBDA) below
  with the reason, and to the README's list under "Configuration".
"""

from __future__ import annotations

import copy

from handler.settings import DEFAULT_SYSTEM_PROMPT, Settings
from tests.cloudformation import ROOT, TEMPLATE, deployed

# Settings that only make sense off Lambda: name -> why the template does not set it.
LOCAL_ONLY = {
    "openai_api_key": "a key in a variable is for local runs; on Lambda it is in the secret",
    "client_tokens": "with a secret (always, on Lambda) its `client_tokens` apply instead",
    "aws_endpoint_url_dynamodb": "another DynamoDB endpoint, for moto in local runs and tests",
    "openapi_docs": "a deployed relay does not describe itself; docs/openapi.json is the copy",
}
# Settings Lambda itself sets in the function's environment.
SET_BY_LAMBDA = {
    "aws_lambda_function_name": "Lambda names the function",
    "aws_lambda_max_concurrency": "Lambda Managed Instances set it from the capacity config",
}

# Switches that add variables only when they are on.
SWITCHES = [
    {},
    {"FrontDoor": "RestApi", "AllowedOrigins": "https://chat.example.com"},
    {"StreamingMode": "lwa", "EnableSnapStart": "true"},
    {
        "JwtIssuer": "https://issuer.example.com",
        "JwtAudience": "relay",
        "JwksUrl": "https://issuer.example.com/keys",
        "JwtRequiredScopes": "chat",
        "OpenAIBaseUrl": "https://example.openai.azure.com/openai/v1/",
        "AllowedExtraFields": "metadata",
    },
]


def function_variables(template: dict | None = None, **parameters: str) -> dict:
    function = deployed(template, **parameters)["Resources"]["RelayFunction"]["Properties"]
    return function["Environment"]["Variables"]


def unreachable_settings(template: dict | None = None) -> list[str]:
    """Settings neither written by the template (under any of the switches) nor exempt."""
    written = {name for switches in SWITCHES for name in function_variables(template, **switches)}
    exempt = LOCAL_ONLY.keys() | SET_BY_LAMBDA.keys()
    return [
        name for name in Settings.model_fields if name.upper() not in written and name not in exempt
    ]


def test_every_setting_is_a_template_variable_or_on_the_local_only_list():
    missing = unreachable_settings()
    assert not missing, (
        f"Settings {missing} cannot be set through template.yaml. For each, add a template "
        "parameter (Description, AllowedValues/AllowedPattern/MinValue, one ParameterGroup) "
        "and pass it as the upper-case variable in Globals/Function/Environment/Variables; or, "
        "if operators never set it on Lambda, add it to LOCAL_ONLY in "
        "tests/test_template_settings.py with the reason, and to the README's local-only list."
    )
    # The exemptions stay true: none of them is written by the template after all.
    written = {name for switches in SWITCHES for name in function_variables(**switches)}
    exempt = LOCAL_ONLY.keys() | SET_BY_LAMBDA.keys()
    assert not {name.upper() for name in exempt} & written
    stale = exempt - Settings.model_fields.keys()
    assert not stale, f"{sorted(stale)} are no longer settings: drop them from the lists"


def test_the_check_catches_a_setting_the_template_stopped_passing():
    broken = copy.deepcopy(TEMPLATE)
    del broken["Globals"]["Function"]["Environment"]["Variables"]["LOG_PROMPTS"]
    assert unreachable_settings(broken) == ["log_prompts"]


def test_the_local_only_settings_are_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    paragraph = readme.split("Settings the template does not set", 1)[1].split("\n\n", 1)[0]
    for name in LOCAL_ONLY.keys() | SET_BY_LAMBDA.keys():
        assert f"`{name.upper()}`" in paragraph, name


def test_every_parameter_is_in_exactly_one_console_group():
    groups = TEMPLATE["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]
    assert sorted(grouped) == sorted(TEMPLATE["Parameters"]), "each parameter once, all of them"
    assert all(group["Label"]["default"] for group in groups)


def test_every_parameter_has_a_description_and_allowed_values():
    for name, spec in TEMPLATE["Parameters"].items():
        assert spec.get("Description"), name
        assert {"AllowedValues", "AllowedPattern", "MinValue"} & spec.keys(), name
        if "MinValue" in spec:
            assert "MaxValue" in spec, name


def test_the_variables_a_parameter_writes_are_settings_the_relay_accepts():
    """Deployed with every switch on, the environment makes a valid `Settings` (the stack's own
    references, which name resources, are left out)."""
    for switches in SWITCHES:
        variables = {
            name.lower(): value if isinstance(value, str) else "named-by-the-stack"
            for name, value in function_variables(**switches).items()
            if name.lower() in Settings.model_fields
        }
        Settings(_env_file=None, **variables)


def test_defaults_of_the_template_are_the_relays_defaults():
    """A parameter left alone behaves as the variable left unset would (a variable the template
    always writes must not change a default behind the operator's back)."""
    variables = function_variables()
    own_defaults = {
        # The template limits callers and names the stack's own resources by default.
        "RATE_LIMIT_PER_MINUTE",
        "TOKEN_BUDGET_PER_DAY",
        "ALLOWED_MODELS",
        "METRICS_NAMESPACE",
    }
    for name, field in Settings.model_fields.items():
        value = variables.get(name.upper())
        if not isinstance(value, str) or name.upper() in own_defaults:
            continue
        written = Settings(_env_file=None, **{name: value})
        assert getattr(written, name) == field.default, name
    assert variables["SYSTEM_PROMPT"] == DEFAULT_SYSTEM_PROMPT
