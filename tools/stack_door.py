"""The front door a deployed relay stack has, for the smoke test: its function URL, or its REST
API's URL and API key (FrontDoor=RestApi), as shell assignments.

    eval "$(python tools/stack_door.py --stack-name chat-relay-dev)"
    # sets RELAY_URL, and RELAY_API_KEY behind the REST API

The API key is a secret: the workflow masks it before anything could print it.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import boto3


def stack_door(stack: str) -> dict[str, str]:
    """`RELAY_URL`, and `RELAY_API_KEY` behind the REST API, from the stack's outputs."""
    [described] = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    if "FunctionUrl" in outputs:
        return {"RELAY_URL": outputs["FunctionUrl"]}
    if "RestApiUrl" in outputs:
        key = boto3.client("apigateway").get_api_key(
            apiKey=outputs["RestApiKeyId"], includeValue=True
        )
        return {"RELAY_URL": outputs["RestApiUrl"], "RELAY_API_KEY": key["value"]}
    raise LookupError(f"stack {stack} has neither a FunctionUrl nor a RestApiUrl output")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack-name", dest="stack", required=True)
    args = parser.parse_args(argv)
    try:
        door = stack_door(args.stack)
    except LookupError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    for name, value in door.items():
        print(f"{name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
