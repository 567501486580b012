"""Small fakes of AWS on loopback for the tests of handler/aws.py: a JSON-protocol endpoint that
checks each SigV4 signature (with botocore) and throttles, fails, drops or recovers on command,
a container-credentials endpoint (ECS's, and Lambda's after a SnapStart restore) serving
credentials the test rotates, and the SSO portal's `GetRoleCredentials` (a laptop's SSO login)."""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import ssl
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from handler.credentials import CredentialStore
from handler.settings import Settings
from tests.conftest import TEST_KEY
from tests.helpers import LoopbackHandler

AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>\w+)"
)


@dataclass
class Call:
    """One request the fake received: its target, the key that signed it (and the session token
    sent with it), what it answered."""

    target: str
    access_key: str | None
    status: int
    code: str | None
    session_token: str | None = None


@dataclass
class FakeAws:
    """An AWS JSON-protocol endpoint on loopback. Keys it accepts are in `keys` (id -> secret);
    `expired` keys are answered `ExpiredTokenException`. `script` holds what the next calls
    answer instead of success: an error code (`ThrottlingException`), an HTTP status (503), or
    `"drop"` (the connection closes unanswered). `clock_offset_s` sets its clock off ours: a
    signature more than 5 minutes off its clock is refused, as AWS does."""

    keys: dict[str, str] = field(default_factory=lambda: {"testing": "testing"})
    expired: set[str] = field(default_factory=set)
    secrets: dict[str, str] = field(default_factory=dict)
    script: deque = field(default_factory=deque)
    clock_offset_s: float = 0.0
    fail_always: int | str | None = None
    calls: list[Call] = field(default_factory=list)
    url: str = ""

    def start(self, tls: ssl.SSLContext | None = None) -> FakeAws:
        """Serve on a loopback port: plain HTTP, or HTTPS with the server context `tls`."""
        fake = self

        class Handler(LoopbackHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                fake._answer(self, body)

            def do_GET(self):  # DynamoDB's health check (the pool's preconnect)
                self.answer(200, b"healthy")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_port}"
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def targets(self, name: str) -> list[Call]:
        return [call for call in self.calls if call.target.endswith(name)]

    def secret_reads(self) -> int:
        """The `GetSecretValue` calls received, every attempt counted."""
        return len(self.targets("GetSecretValue"))

    def _answer(self, handler: LoopbackHandler, body: bytes) -> None:
        target = handler.headers.get("x-amz-target", "")
        now = time.time() + self.clock_offset_s
        signed = AUTHORIZATION.match(handler.headers.get("authorization", ""))
        key = signed["key"] if signed else None
        token = handler.headers.get("x-amz-security-token")

        def reply(status: int, payload: dict, code: str | None = None) -> None:
            self.calls.append(Call(target, key, status, code, token))
            data = json.dumps(payload).encode()
            handler.send_response_only(status)  # with its own clock's Date, not the server's
            handler.send_header("date", email.utils.formatdate(now, usegmt=True))
            handler.send_header("content-type", "application/x-amz-json-1.1")
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        def error(status: int, code: str) -> None:
            reply(status, {"__type": f"com.amazonaws.fake#{code}", "message": code}, code)

        if signed is None or key not in self.keys:
            return error(403, "UnrecognizedClientException")
        stamp = handler.headers.get("x-amz-date", "")
        signed_at = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
        if abs(signed_at.timestamp() - now) > 300:
            return error(400, "InvalidSignatureException")  # "Signature expired"
        if not self._signature_holds(handler, body, signed):
            return error(403, "InvalidSignatureException")
        if key in self.expired:
            return error(400, "ExpiredTokenException")
        action = self.script.popleft() if self.script else self.fail_always
        if action == "drop":
            self.calls.append(Call(target, key, 0, "drop", token))
            handler.close_connection = True
            handler.connection.shutdown(2)
            return None
        if isinstance(action, int):
            return error(action, "InternalFailure" if action >= 500 else "BadRequest")
        if isinstance(action, str):
            return error(400, action)
        request = json.loads(body)
        if target.endswith("GetSecretValue"):
            secret = self.secrets.get(request["SecretId"])
            if secret is None:
                return error(400, "ResourceNotFoundException")
            return reply(200, {"SecretString": secret})
        return reply(200, {})

    def _signature_holds(self, handler: LoopbackHandler, body: bytes, signed: re.Match) -> bool:
        names = signed["signed"].split(";")
        headers = {name: handler.headers.get(name, "") for name in names}
        request = AWSRequest("POST", f"http://{headers['host']}{handler.path}", data=body)
        for name, value in headers.items():
            request.headers[name] = value
        request.context["timestamp"] = handler.headers["x-amz-date"]
        token = handler.headers.get("x-amz-security-token")
        signer = SigV4Auth(
            Credentials(signed["key"], self.keys[signed["key"]], token),
            signed["service"],
            signed["region"],
        )
        canonical = signer.canonical_request(request)
        return signer.signature(signer.string_to_sign(request, canonical), request) == signed["sig"]


@dataclass
class ContainerCredentials:
    """The container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, checked against
    `AWS_CONTAINER_AUTHORIZATION_TOKEN`), serving `current` (key id, secret) with an
    `Expiration` `lifetime_s` ahead; `fetches` counts the requests."""

    token: str = "container-authorization-token"
    current: tuple[str, str] = ("CONTAINERKEY1", "container-secret-1")
    lifetime_s: float = 3600.0
    fetches: int = 0
    url: str = ""

    def start(self) -> ContainerCredentials:
        fake = self

        class Handler(LoopbackHandler):
            def do_GET(self):
                if self.headers.get("authorization") != fake.token:
                    self.answer(401, b"{}", "application/json")
                    return
                fake.fetches += 1
                expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
                    seconds=fake.lifetime_s
                )
                key, secret = fake.current
                body = {
                    "AccessKeyId": key,
                    "SecretAccessKey": secret,
                    "Token": f"session-token-of-{key}",
                    "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                self.answer(200, json.dumps(body).encode(), "application/json")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1/credentials"
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def environment(self) -> dict[str, str]:
        """The variables a process finds its container credentials by (and no keys)."""
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.url,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": self.token,
        }


@dataclass
class SsoPortal:
    """The SSO portal's `GetRoleCredentials` (`GET /federation/credentials?role_name=&account_id=`
    with the `x-amz-sso_bearer_token` header), as botocore's SSO provider calls it after an
    `aws sso login`: serves `current` (key id, secret, session token) to the bearer `token` for
    `role` in `account`, expiring `lifetime_s` ahead. `requests` holds each request's query and
    bearer token."""

    token: str = "sso-access-token"
    account: str = "111122223333"
    role: str = "Developer"
    current: tuple[str, str, str] = ("SSOKEY1", "sso-secret-1", "sso-session-token-1")
    lifetime_s: float = 3600.0
    requests: list[tuple[dict[str, list[str]], str | None]] = field(default_factory=list)
    url: str = ""

    def start(self) -> SsoPortal:
        fake = self

        class Handler(LoopbackHandler):
            def do_GET(self):
                parts = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parts.query)
                bearer = self.headers.get("x-amz-sso_bearer_token")
                fake.requests.append((query, bearer))
                if parts.path != "/federation/credentials" or bearer != fake.token:
                    body = {"message": "Session token not found or invalid"}
                    self.answer(401, json.dumps(body).encode(), "application/json")
                    return
                if query != {"role_name": [fake.role], "account_id": [fake.account]}:
                    body = {"message": "No access"}
                    self.answer(403, json.dumps(body).encode(), "application/json")
                    return
                key, secret, session_token = fake.current
                body = {
                    "roleCredentials": {
                        "accessKeyId": key,
                        "secretAccessKey": secret,
                        "sessionToken": session_token,
                        "expiration": int((time.time() + fake.lifetime_s) * 1000),
                    }
                }
                self.answer(200, json.dumps(body).encode(), "application/json")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def self_signed_certificate(directory) -> tuple[ssl.SSLContext, str]:
    """A server TLS context for 127.0.0.1 with a certificate of its own making, and the path of
    that certificate (the CA bundle a client must be given to trust it)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake aws")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fake-aws.pem", directory / "fake-aws.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, str(cert_path)


def runtime_env_reading(fake: FakeAws, secret_id: str, **env: str) -> dict[str, str]:
    """The environment of a runtime (tests/runtime_process.py) that reads its key `secret_id`
    from `fake`, as on Lambda; `env` on top (an empty value leaves a variable out)."""
    return {
        "OPENAI_API_KEY": "",
        "OPENAI_SECRET_ID": secret_id,
        "AWS_ENDPOINT_URL": fake.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        **env,
    }


def secrets_manager_holding(secret_id: str):
    """A `fake_aws` fixture: a FakeAws holding `secret_id` (the test key) as the endpoint
    (`AWS_ENDPOINT_URL_SECRETS_MANAGER`) of every Secrets Manager client the test makes."""

    @pytest.fixture
    def fake_aws(monkeypatch):
        fake = FakeAws(secrets={secret_id: TEST_KEY}).start()
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", fake.url)
        yield fake
        fake.stop()

    return fake_aws


def secret_store(secret_id: str, **settings) -> CredentialStore:
    """The relay's credential store reading the key from `secret_id` only (none in the
    environment, no .env file), with `settings` on top."""
    return CredentialStore(
        Settings(_env_file=None, openai_api_key=None, openai_secret_id=secret_id, **settings)
    )
