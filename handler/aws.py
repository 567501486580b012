"""AWS's JSON protocol without the SDK: the standard variables, an endpoint, a SigV4 signature.

Importing boto3 and building a client costs about a quarter of the runtime's init CPU (bench
README, "Lambda-shaped CPU"); the relay's two AWS calls (`secretsmanager.py`, `dynamodb.py`) are
each one signed POST, so they are made with this module and the keys Lambda puts in the
environment. Where the environment holds no keys (a profile, SSO), each caller falls back to
the SDK's credential chain itself.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class JsonApi:
    """One AWS service's JSON protocol: the name it signs with and its content type."""

    service: str  # the signing name and the endpoint's first label
    content_type: str  # `application/x-amz-json-1.0` or `-1.1`, per service

    def endpoint(self, aws: AwsEnvironment) -> str:
        """`AWS_ENDPOINT_URL_<SERVICE>`/`AWS_ENDPOINT_URL` when set (moto locally), else the
        service's regional endpoint."""
        if aws.endpoint_url:
            return aws.endpoint_url
        suffix = "amazonaws.com.cn" if (aws.region or "").startswith("cn-") else "amazonaws.com"
        return f"https://{self.service}.{aws.region}.{suffix}"

    def signed_headers(
        self,
        aws: AwsEnvironment,
        host: str,
        target: str,
        body: bytes,
        now: datetime.datetime | None = None,
    ) -> dict[str, str]:
        """The headers of a `POST /` calling `target` (`X-Amz-Target`, e.g.
        `DynamoDB_20120810.UpdateItem`), signed with SigV4 (AWS's documented algorithm)."""
        now = now or datetime.datetime.now(datetime.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {
            "content-type": self.content_type,
            "host": host,
            "x-amz-date": stamp,
            "x-amz-target": target,
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
        scope = f"{day}/{aws.region}/{self.service}/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = _hmac(f"AWS4{aws.secret_access_key}".encode(), day)
        for part in (aws.region, self.service, "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={aws.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def error_code(answer: bytes) -> str:
    """The error's code from its JSON body: `ResourceNotFoundException` of
    `{"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", ...}`."""
    try:
        kind = json.loads(answer).get("__type", "")
    except (ValueError, AttributeError):
        return "unreadable error"
    return kind.rsplit("#", 1)[-1] or "no error code"
