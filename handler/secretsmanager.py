"""Secrets Manager's `GetSecretValue`, through handler/aws.py (awscrt signs, aiohttp carries).

Only `credentials.py` calls this. A read opens its own connection: it happens at init and then
once per `SECRET_TTL_S`, so a pool would mostly hold a connection the next read finds closed.
"""

from __future__ import annotations

import base64

from handler.aws import AwsCallFailed, AwsEnvironment, AwsJsonClient, JsonService

# The secret is read at init and when the cached value is stale: a request may be waiting on it,
# so all attempts together stop after `budget_s`.
SECRETS_MANAGER = JsonService(
    "secretsmanager",
    "Secrets Manager",
    "application/x-amz-json-1.1",
    connect_timeout_s=2.0,
    read_timeout_s=3.0,
    budget_s=6.0,
    base_backoff_s=0.2,
)
GET_SECRET_VALUE = "secretsmanager.GetSecretValue"


class SecretReadFailed(Exception):
    """`GetSecretValue` failed; the message names the HTTP status and AWS error code only."""


class SecretsManager:
    """`GetSecretValue` of one process, with the SDKs' credential chain and standard retries."""

    def __init__(self, aws: AwsEnvironment) -> None:
        self._client = AwsJsonClient(SECRETS_MANAGER, aws, pooled=False)

    async def get_secret_value(self, secret_id: str) -> str | bytes:
        """The secret's current value: `SecretString`, or the bytes of `SecretBinary`."""
        try:
            value = await self._client.call(GET_SECRET_VALUE, {"SecretId": secret_id})
        except AwsCallFailed as exc:
            raise SecretReadFailed(str(exc)) from exc
        if "SecretString" in value:
            return value["SecretString"]
        return base64.b64decode(value.get("SecretBinary", ""))
