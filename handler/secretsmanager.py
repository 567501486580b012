"""Secrets Manager's `GetSecretValue` as one HTTPS request signed with AWS Signature Version 4.

With the credentials Lambda puts in the environment, one signed request of the standard library
does what boto3 would (handler/aws.py says why). `credentials.py` falls back to Powertools
(boto3) when the environment holds no keys (a profile, SSO). Only `credentials.py` calls this.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import TYPE_CHECKING

from handler.aws import AwsEnvironment, JsonApi, error_code

if TYPE_CHECKING:
    import ssl

SECRETS_MANAGER = JsonApi("secretsmanager", "application/x-amz-json-1.1")
TIMEOUT_S = 10.0
ATTEMPTS = 2  # a dropped connection or a 5xx is tried once more, as the SDK would
_tls: ssl.SSLContext | None = None  # loading the CA store costs tens of ms: once per process


class SecretReadFailed(Exception):
    """`GetSecretValue` failed; the message names the HTTP status and AWS error code only."""


def get_secret_value(aws: AwsEnvironment, secret_id: str) -> str | bytes:
    """The secret's current value: `SecretString`, or the bytes of `SecretBinary`."""
    import http.client  # here, in the reading thread: it is not cheap, and not always needed

    endpoint = urllib.parse.urlsplit(SECRETS_MANAGER.endpoint(aws))
    body = json.dumps({"SecretId": secret_id}).encode()
    last: Exception | None = None
    for _ in range(ATTEMPTS):
        headers = SECRETS_MANAGER.signed_headers(
            aws, endpoint.netloc, "secretsmanager.GetSecretValue", body
        )
        try:
            status, answer = _post(endpoint, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            last = SecretReadFailed(f"{type(exc).__name__} reaching Secrets Manager")
            continue
        if status == 200:
            value = json.loads(answer)
            if "SecretString" in value:
                return value["SecretString"]
            return base64.b64decode(value.get("SecretBinary", ""))
        last = SecretReadFailed(f"HTTP {status} ({error_code(answer)})")
        if status < 500:
            break
    raise last


def _post(endpoint: urllib.parse.SplitResult, headers: dict, body: bytes) -> tuple[int, bytes]:
    import http.client
    import ssl

    global _tls
    if endpoint.scheme == "https":
        _tls = _tls or ssl.create_default_context()
        connection = http.client.HTTPSConnection(endpoint.netloc, timeout=TIMEOUT_S, context=_tls)
    else:  # a local endpoint (moto, `make dev`)
        connection = http.client.HTTPConnection(endpoint.netloc, timeout=TIMEOUT_S)
    try:
        connection.request("POST", endpoint.path or "/", body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
