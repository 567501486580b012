"""An OpenID Connect issuer on loopback: real RSA and EC keys, its discovery document and JWKS
over HTTP, and the tokens it signs. Tests rotate its keys and count how often the JWKS is read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class OidcIssuer:
    """Serves `/.well-known/openid-configuration` and `/jwks.json`; signs tokens."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}  # kid -> private key, published or not
        self.published: list[str] = []  # kids in the JWKS, in order
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.jwks_status = 200
        self.jwks_cache_control: str | None = None  # the JWKS's Cache-Control header, if any
        self.hold_jwks: threading.Event | None = None  # when set, the JWKS waits for it
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    issuer.discovery_fetches += 1
                    body = {"issuer": issuer.issuer, "jwks_uri": issuer.jwks_url}
                    return self._send(200, body)
                if self.path == "/jwks.json":
                    issuer.jwks_fetches += 1
                    if issuer.hold_jwks is not None:
                        issuer.hold_jwks.wait(10)
                    try:
                        self._send(issuer.jwks_status, issuer.jwks(), issuer.jwks_cache_control)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # a client that gave up on a held answer has gone: nobody to tell
                    return None
                return self._send(404, {"error": "not found"})

            def _send(self, status: int, body: dict, cache_control: str | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                if cache_control:
                    self.send_header("cache-control", cache_control)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self._server.server_port}"
        self.jwks_url = f"{self.issuer}/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> OidcIssuer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_key(
        self, kid: str, kind: str = "RSA", publish: bool = True, alg: str | None = None
    ) -> None:
        """A new real key pair: `RSA` (2048 bits, RS256) or `EC` (P-256, ES256); `alg`, when
        given, is published with the key (the one algorithm it may be used with)."""
        parameters = {"kid": kid, "use": "sig", **({"alg": alg} if alg is not None else {})}
        if kind == "RSA":
            key = RSAKey.generate_key(2048, parameters=parameters)
        else:
            key = ECKey.generate_key("P-256", parameters=parameters)
        self.keys[kid] = key
        if publish:
            self.published.append(kid)

    def publish_only(self, *kids: str) -> None:
        self.published = list(kids)

    def jwks(self) -> dict:
        return {"keys": [self.keys[kid].as_dict(private=False) for kid in self.published]}

    def claims(self, **overrides: Any) -> dict:
        """Valid claims for audience `relay-app`; `None` values remove a claim."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "user-1234",
            "aud": "relay-app",
            "iat": now,
            "exp": now + 300,
            "scope": "openid chat",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self,
        kid: str | None = None,
        alg: str | None = None,
        typ: str | None = None,
        **claims: Any,
    ) -> str:
        """A token signed by key `kid` (default: the first key) with `claims` over the defaults,
        and a `typ` header when given."""
        kid = kid or next(iter(self.keys))
        key = self.keys[kid]
        alg = alg or ("RS256" if key.key_type == "RSA" else "ES256")
        header = {"alg": alg, "kid": kid, **({"typ": typ} if typ else {})}
        return jwt.encode(header, self.claims(**claims), key, algorithms=[alg])

    def public_pem(self, kid: str) -> bytes:
        return self.keys[kid].as_pem(private=False)


def unsigned_token(header: dict, claims: dict, signature: bytes = b"") -> str:
    """A token assembled by hand (`alg: none`, forged signatures)."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


def hs256_token(secret: bytes, header: dict, claims: dict) -> str:
    """HS256 with `secret` as the HMAC key: the classic attack uses the issuer's public key."""
    head = b64url(json.dumps({**header, "alg": "HS256"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"
