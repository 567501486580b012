"""Sign-in with JWTs against a real OIDC issuer on loopback (real RSA and EC keys, discovery,
JWKS): good tokens get in as `jwt:<sub>`, every kind of bad token is 401 before any upstream
call, keys are cached, rotated keys are picked up, and the JWKS fetch never stalls the relay."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devtools.oidc_issuer import b64url, hs256_token, unsigned_token

PROMPT = {"prompt": "hi"}


def post(relay, token: str | None, path: str = "/chat", body: dict | None = None):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{relay.url}{path}", json=body or PROMPT, headers=headers, timeout=15)


def request_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "relay.request"]


def caller_of(relay, token: str | None, caplog) -> str:
    """Make a request and return the caller its log line names (written as the response ends,
    which can be a moment after the client has read it)."""
    before = len(request_lines(caplog))
    assert post(relay, token).status_code == 200
    deadline = time.monotonic() + 5
    while len(lines := request_lines(caplog)) == before:
        assert time.monotonic() < deadline, "no request log line"
        time.sleep(0.01)
    return lines[-1]["caller"]


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_a_token_signed_with_a_published_key_gets_in_as_its_subject(
    upstream, signin_relay, issuer, caplog, kid
):
    relay = signin_relay()
    assert caller_of(relay, issuer.token(kid, sub=f"user-{kid}"), caplog) == f"jwt:user-{kid}"
    assert len(upstream.requests) == 1


def test_discovery_finds_the_jwks_and_an_explicit_jwks_url_skips_it(upstream, signin_relay, issuer):
    assert post(signin_relay(), issuer.token()).status_code == 200  # via discovery
    direct = signin_relay(jwks_url=issuer.jwks_url)
    assert post(direct, issuer.token()).status_code == 200


def _expired(issuer):
    return issuer.token(exp=int(time.time()) - 120, iat=int(time.time()) - 600)


def _not_yet_valid(issuer):
    return issuer.token(nbf=int(time.time()) + 300)


def _tampered(issuer):
    head, _, signature = issuer.token().split(".")
    forged = b64url(json.dumps(issuer.claims(sub="admin")).encode())
    return f"{head}.{forged}.{signature}"


def _alg_none(issuer):
    return unsigned_token({"alg": "none", "kid": "rsa-1"}, issuer.claims())


def _hs256_with_the_public_key(issuer):
    return hs256_token(issuer.public_pem("rsa-1"), {"kid": "rsa-1"}, issuer.claims())


def _signed_by_an_unpublished_key(issuer):
    issuer.add_key("attacker", "RSA", publish=False)
    return issuer.token("attacker")


BAD_TOKENS = {
    "expired": _expired,
    "not-yet-valid": _not_yet_valid,
    "wrong-issuer": lambda i: i.token(iss="https://evil.example.com"),
    "wrong-audience": lambda i: i.token(aud="another-app"),
    "no-expiry": lambda i: i.token(exp=None),
    "tampered-payload": _tampered,
    "alg-none": _alg_none,
    "hs256-signed-with-the-public-key": _hs256_with_the_public_key,
    "unknown-kid": _signed_by_an_unpublished_key,
    "rs256-header-on-an-ec-key": lambda i: _relabel(i.token("ec-1"), "RS256"),
    "missing-scope": lambda i: i.token(scope="openid"),
    "not-a-jwt-at-all": lambda i: "a.b.c",
}


def _relabel(token: str, alg: str) -> str:
    head, body, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    return f"{b64url(json.dumps({**header, 'alg': alg}).encode())}.{body}.{signature}"


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_bad_token_is_401_without_an_upstream_call(
    upstream, signin_relay, issuer, caplog, make_token
):
    relay = signin_relay(jwt_required_scopes="chat")
    assert post(relay, issuer.token()).status_code == 200  # the relay does accept good ones
    token = make_token(issuer)
    for path, body in (("/chat", PROMPT), ("/v1/chat/completions", None)):
        body = body or {"messages": [{"role": "user", "content": "hi"}]}
        response = post(relay, token, path, body)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        error = response.json()["error"]
        assert (error.get("code") or error["type"]) == "unauthorized"  # /v1: OpenAI's shape
    assert len(upstream.requests) == 1  # only the good token's request reached the model
    assert any(r.getMessage().startswith("sign-in rejected:") for r in caplog.records)
    assert all(token not in r.getMessage() for r in caplog.records)


def test_no_token_is_401_and_names_the_bearer(upstream, signin_relay):
    response = post(signin_relay(), None)
    assert response.status_code == 401
    assert "bearer token is required" in response.json()["error"]["message"]
    assert upstream.requests == []


def test_cognito_access_token_matches_on_client_id_and_machine_token_on_it_too(
    upstream, signin_relay, issuer, caplog
):
    relay = signin_relay(jwt_audience="other-app,cognito-client-id")
    user = issuer.token(aud=None, client_id="cognito-client-id", token_use="access")
    assert caller_of(relay, user, caplog) == "jwt:user-1234"
    machine = issuer.token(aud=None, sub=None, client_id="cognito-client-id")
    assert caller_of(relay, machine, caplog) == "jwt:cognito-client-id"
    stranger = issuer.token(aud=None, client_id="some-other-client")
    assert post(relay, stranger).status_code == 401


def test_keys_are_cached_and_a_rotated_key_is_picked_up_once_allowed(
    upstream, signin_relay, issuer
):
    relay = signin_relay(jwks_min_refetch_s=0.5)
    for _ in range(3):
        assert post(relay, issuer.token("rsa-1")).status_code == 200
    assert issuer.jwks_fetches == 1  # parsed once, then served from the cache

    # The issuer rotates: a new key signs, and the JWKS lists it. Once JWKS_MIN_REFETCH_S has
    # passed since the last fetch, the new kid fetches the JWKS once, for all who present it.
    issuer.add_key("rsa-2", "RSA")
    issuer.publish_only("rsa-2", "ec-1")
    time.sleep(0.6)
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: post(relay, issuer.token("rsa-2")).status_code, [0] * 6))
    assert statuses == [200] * 6
    assert issuer.jwks_fetches == 2
    assert post(relay, issuer.token("rsa-1")).status_code == 401  # the retired key is gone


def test_made_up_kids_do_not_make_the_relay_fetch_again_within_a_minute(
    upstream, signin_relay, issuer
):
    relay = signin_relay()  # the default: at most one re-fetch per 60 s
    assert post(relay, issuer.token()).status_code == 200
    issuer.add_key("made-up", "EC", publish=False)
    for _ in range(5):
        assert post(relay, issuer.token("made-up")).status_code == 401
    assert issuer.jwks_fetches == 1


def test_client_tokens_and_jwts_are_both_accepted(upstream, signin_relay, issuer, caplog):
    relay = signin_relay(client_tokens="client-token-and-jwt-0123456789")
    assert caller_of(relay, "client-token-and-jwt-0123456789", caplog).startswith("token:")
    assert caller_of(relay, issuer.token(), caplog) == "jwt:user-1234"
    assert post(relay, "client-token-wrong").status_code == 401
    assert post(relay, _expired(issuer)).status_code == 401


def test_an_unreachable_jwks_is_503_not_401_and_no_upstream_call(
    upstream, signin_relay, issuer, caplog
):
    issuer.jwks_status = 500
    response = post(signin_relay(), issuer.token())
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "sign_in_unavailable"
    assert upstream.requests == []
    assert any("sign-in unavailable" in r.getMessage() for r in caplog.records)


def test_the_jwks_fetch_does_not_stall_other_requests(upstream, signin_relay, issuer):
    relay = signin_relay()
    issuer.hold_jwks = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        signed_in = pool.submit(post, relay, issuer.token())
        deadline = time.monotonic() + 5
        while issuer.jwks_fetches == 0:  # the relay is now waiting for the issuer
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # While that fetch is outstanding, the same relay still answers everyone else.
        assert httpx.get(f"{relay.url}/healthz", timeout=3).status_code == 200
        assert post(relay, None).status_code == 401
        assert not signed_in.done()
        issuer.hold_jwks.set()
        assert signed_in.result().status_code == 200


def test_the_issuer_must_be_https_except_on_loopback():
    from pydantic import ValidationError

    from handler.settings import Settings

    with pytest.raises(ValidationError, match="https"):
        Settings(_env_file=None, jwt_issuer="http://login.example.com", jwt_audience="a")
    with pytest.raises(ValidationError, match="JWT_AUDIENCE"):
        Settings(_env_file=None, jwt_issuer="https://login.example.com")
    Settings(_env_file=None, jwt_issuer="https://login.example.com", jwt_audience="a")
    Settings(_env_file=None, jwt_issuer="http://localhost:9/x", jwt_audience="a")


def test_a_token_accepted_before_is_refused_once_it_expires(upstream, signin_relay, issuer):
    relay = signin_relay(jwt_leeway_s=0)
    expires = int(time.time()) + 2
    token = issuer.token(exp=expires)
    assert post(relay, token).status_code == 200
    assert post(relay, token).status_code == 200  # the verified token is remembered...
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    assert post(relay, token).status_code == 401  # ...but never past its `exp`
