"""`make dev`: the relay on http://127.0.0.1:8000 with a local Secrets Manager and DynamoDB and,
without an OpenAI key, the offline demo upstream. No AWS account and no OpenAI key needed.

The key is stored in moto's standalone server and the app reads it through boto3, exactly as on
Lambda; the per-caller counters go to a table in the same server, so limits can be tried with
`RATE_LIMIT_PER_MINUTE=3 make dev`. Ctrl-C stops everything: all parts run in this one process.
"""

from __future__ import annotations

import os
import sys

from devtools.moto_server import create_quota_table, start_moto_server
from devtools.openai_server import OpenAICompatibleServer
from devtools.scripts import demo_script

LOCAL_SECRET_ID = "local/openai"
LOCAL_QUOTA_TABLE = "local-quota"
DEMO_KEY = "sk-local-demo"
# The page's one tool (handler/static/app.js runs it in the browser), offered unless told
# otherwise (CHAT_TOOLS='' make dev offers none).
DEMO_TOOLS = (
    '[{"name": "get_time_zone", "description": "The time zone of the user\'s browser, such as '
    'Europe/Paris.", "parameters": {"type": "object", "properties": {}}}]'
)


def start_secrets_manager(api_key: str) -> str:
    """moto as the local Secrets Manager, holding `api_key`; the environment points boto3 at it."""
    _, endpoint = start_moto_server()
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",
        AWS_DEFAULT_REGION=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    import boto3

    boto3.client("secretsmanager").create_secret(Name=LOCAL_SECRET_ID, SecretString=api_key)
    return endpoint


def start_demo_upstream() -> str:
    """The fake OpenAI streaming the demo answer, in a background thread; its base URL."""
    return OpenAICompatibleServer(default=demo_script()).serve_in_thread().base_url


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    real_key = os.environ.pop("OPENAI_API_KEY", None)
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]  # never touch a real AWS account from the local stack

    endpoint = start_secrets_manager(real_key or DEMO_KEY)
    os.environ["OPENAI_SECRET_ID"] = LOCAL_SECRET_ID
    # A deployed relay refuses callers until access is configured; the local one, on loopback,
    # lets anyone in unless told otherwise (ALLOW_ANONYMOUS=false make dev).
    os.environ.setdefault("ALLOW_ANONYMOUS", "true")
    anonymous = os.environ["ALLOW_ANONYMOUS"].strip().lower() in {"1", "true", "yes", "on"}
    access = (
        "ANONYMOUS: no token needed (ALLOW_ANONYMOUS=true; a deployed relay refuses this)"
        if anonymous
        else "ALLOW_ANONYMOUS=false: only JWT sign-in (JWT_ISSUER, JWT_AUDIENCE) gets in"
    )
    os.environ.setdefault("CHAT_TOOLS", DEMO_TOOLS)
    os.environ["QUOTA_TABLE"] = create_quota_table(endpoint, LOCAL_QUOTA_TABLE)
    # The API's own description, for the developer at hand (a deployed relay leaves it off).
    os.environ.setdefault("OPENAPI_DOCS", "true")
    limits = ", ".join(
        f"{name}={os.environ.get(name, '0')}"
        for name in ("RATE_LIMIT_PER_MINUTE", "TOKEN_BUDGET_PER_DAY")
    )
    if real_key:
        upstream = os.environ.get("OPENAI_BASE_URL", "OpenAI (api.openai.com)")
        mode = "OpenAI with your OPENAI_API_KEY"
    else:
        upstream = os.environ["OPENAI_BASE_URL"] = start_demo_upstream()
        mode = "OFFLINE DEMO upstream (canned answer; set OPENAI_API_KEY to use OpenAI)"

    url = f"http://127.0.0.1:{port}"
    print(
        f"""
  Streaming chat relay, local stack
  ---------------------------------
  relay            {url}   (chat page: {url}/)
  model            {mode}
  access           {access}
  upstream         {upstream}
  secrets manager  {endpoint} (moto), secret '{LOCAL_SECRET_ID}'
  quota table      '{LOCAL_QUOTA_TABLE}' in the same moto server; {limits} (0 = off)
  API docs         {url}/docs and {url}/openapi.json (OPENAPI_DOCS=true)

  Try it:
    curl -N {url}/chat -H 'content-type: application/json' -d '{{"prompt": "Tell me a joke!"}}'
    curl -N {url}/chat -H 'content-type: application/json' \\
         -H 'accept: text/event-stream' -d '{{"prompt": "Tell me a joke!"}}'

  Ctrl-C stops everything.
""",
        flush=True,
    )
    import uvicorn

    uvicorn.run("handler.app:app", host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    sys.exit(main())
