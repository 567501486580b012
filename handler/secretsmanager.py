"""Secrets Manager's `GetSecretValue` as one HTTPS request signed with AWS Signature Version 4.

Importing boto3 and building its client was about a quarter of the runtime's init CPU (bench
README, "Lambda-shaped CPU"); with the credentials Lambda puts in the environment, one signed
request of the standard library does the same. `credentials.py` falls back to Powertools (boto3)
when the environment holds no keys (a profile, SSO). Only `credentials.py` calls this.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

SERVICE = "secretsmanager"
TIMEOUT_S = 10.0
ATTEMPTS = 2  # a dropped connection or a 5xx is tried once more, as the SDK would
_tls: ssl.SSLContext | None = None  # loading the CA store costs tens of ms: once per process


@dataclass(frozen=True)
class AwsEnvironment:
    """The SDK's standard variables, as Lambda sets them (handler/settings.py reads them)."""

    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_url: str | None = None

    @property
    def signs(self) -> bool:
        """True when these credentials can sign a request without the SDK."""
        return bool(self.access_key_id and self.secret_access_key and self.region)


class SecretReadFailed(Exception):
    """`GetSecretValue` failed; the message names the HTTP status and AWS error code only."""


def get_secret_value(aws: AwsEnvironment, secret_id: str) -> str | bytes:
    """The secret's current value: `SecretString`, or the bytes of `SecretBinary`."""
    import http.client  # here, in the reading thread: it is not cheap, and not always needed

    endpoint = urllib.parse.urlsplit(aws.endpoint_url or _default_endpoint(aws.region))
    body = json.dumps({"SecretId": secret_id}).encode()
    last: Exception | None = None
    for _ in range(ATTEMPTS):
        try:
            status, answer = _post(endpoint, signed_headers(aws, endpoint.netloc, body), body)
        except (OSError, http.client.HTTPException) as exc:
            last = SecretReadFailed(f"{type(exc).__name__} reaching Secrets Manager")
            continue
        if status == 200:
            value = json.loads(answer)
            if "SecretString" in value:
                return value["SecretString"]
            return base64.b64decode(value.get("SecretBinary", ""))
        last = SecretReadFailed(f"HTTP {status} ({_error_code(answer)})")
        if status < 500:
            break
    raise last


def _default_endpoint(region: str | None) -> str:
    suffix = "amazonaws.com.cn" if (region or "").startswith("cn-") else "amazonaws.com"
    return f"https://{SERVICE}.{region}.{suffix}"


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


def _error_code(answer: bytes) -> str:
    try:
        kind = json.loads(answer).get("__type", "")
    except ValueError:
        return "unreadable error"
    return kind.rsplit("#", 1)[-1] or "no error code"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_headers(aws: AwsEnvironment, host: str, body: bytes) -> dict[str, str]:
    """The request's headers with SigV4's `Authorization` (AWS's documented algorithm)."""
    now = datetime.datetime.now(datetime.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {
        "content-type": "application/x-amz-json-1.1",
        "host": host,
        "x-amz-date": stamp,
        "x-amz-target": "secretsmanager.GetSecretValue",
    }
    if aws.session_token:
        headers["x-amz-security-token"] = aws.session_token
    names = sorted(headers)
    signed = ";".join(names)
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            "".join(f"{name}:{headers[name]}\n" for name in names),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{aws.region}/{SERVICE}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(f"AWS4{aws.secret_access_key}".encode(), day)
    for part in (aws.region, SERVICE, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={aws.access_key_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return headers
