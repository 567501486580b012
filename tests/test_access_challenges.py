"""What a refused caller is told: a 401 without a token asks for one with a plain `Bearer`
challenge, a token that was tried and refused gets RFC 6750's `invalid_token` (so an OIDC
client fetches a new one), and startup warns only about settings it really ignores."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest

from tests.conftest import TEST_KEY

TOKEN = "client-token-3f9a1c7e5b2d4a6c8e0f"


def post(relay, authorization: str | None = None) -> httpx.Response:
    headers = {"authorization": authorization} if authorization else {}
    return httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=headers, timeout=15)


def test_no_token_where_client_tokens_are_configured_asks_for_one_with_a_plain_challenge(
    upstream, make_relay
):
    relay = make_relay(allow_anonymous=False, client_tokens=TOKEN)
    response = post(relay)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["message"].startswith("a bearer token is required")
    assert upstream.requests == []


def test_a_wrong_client_token_is_told_it_is_an_invalid_token(upstream, make_relay):
    relay = make_relay(allow_anonymous=False, client_tokens=TOKEN)
    response = post(relay, "Bearer client-token-not-the-right-one")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_a_refused_access_token_is_told_it_is_an_invalid_token(upstream, signin_relay, issuer):
    relay = signin_relay()
    response = post(relay, f"Bearer {issuer.token(aud='another-app')}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["error"]["message"].startswith("the access token is not valid")
    assert upstream.requests == []


def test_client_tokens_beside_a_key_in_the_environment_are_used_without_a_warning(
    upstream, make_relay, caplog
):
    relay = make_relay(allow_anonymous=False, client_tokens=TOKEN)
    messages = [r.getMessage() for r in caplog.records if r.name == "relay.access"]
    assert not any("is ignored" in m for m in messages)
    assert any("1 client tokens from CLIENT_TOKENS" in m for m in messages)
    assert post(relay, f"Bearer {TOKEN}").status_code == 200


def test_a_token_shaped_like_a_jwt_where_sign_in_is_off_is_an_invalid_token(
    upstream, make_relay, issuer
):
    """Only client tokens configured: a JWT, even a validly signed one, is a wrong token (401),
    never handed to a verifier that does not exist."""
    relay = make_relay(allow_anonymous=False, client_tokens=TOKEN)
    response = post(relay, f"Bearer {issuer.token()}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["error"]["message"] == "the bearer token is not valid"


def test_an_opaque_token_where_sign_in_is_on_is_refused_without_fetching_keys(
    upstream, signin_relay, issuer
):
    relay = signin_relay()
    response = post(relay, "Bearer opaque-token-without-dots")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "the bearer token is not valid"
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (0, 0)


@pytest.mark.parametrize(
    "context",
    [
        "not json at all",
        json.dumps({"authorizer": {"iam": {"userArn": ""}}}),
        json.dumps({"authorizer": {"iam": {"userArn": 12345}}}),
        json.dumps({"authorizer": {"iam": {}}}),
        json.dumps(["authorizer"]),
    ],
    ids=["not-json", "empty-arn", "number-arn", "no-arn", "a-list"],
)
def test_an_iam_request_context_without_a_caller_arn_is_401(upstream, make_relay, context):
    """Behind the Lambda Web Adapter the caller comes in the adapter's header; a header that
    names no caller (unreadable, or an ARN that is empty or not a string) admits nobody."""
    relay = make_relay(url_auth_type="AWS_IAM", aws_lwa_invoke_mode="response_stream")
    response = httpx.post(
        f"{relay.url}/chat",
        json={"prompt": "hi"},
        headers={"x-amzn-request-context": context},
        timeout=15,
    )
    assert response.status_code == 401
    assert "IAM caller" in response.json()["error"]["message"]
    assert upstream.requests == []


def test_a_signed_in_callers_identity_keeps_the_first_128_characters_of_the_subject(
    upstream, signin_relay, issuer, caplog
):
    subject = "".join(f"{n:03d}" for n in range(60))  # 180 characters, each prefix unique
    relay = signin_relay()
    assert post(relay, f"Bearer {issuer.token(sub=subject)}").status_code == 200
    deadline = time.monotonic() + 5
    while not (lines := [r for r in caplog.records if r.name == "relay.request"]):
        assert time.monotonic() < deadline, "no request log line"
        time.sleep(0.01)
    assert json.loads(lines[0].getMessage())["caller"] == f"jwt:{subject[:128]}"


def test_openai_gets_the_32_hex_digit_hmac_of_the_caller_the_contract_describes(
    upstream, make_relay
):
    """docs/api.md: HMAC-SHA256 of the identity keyed with the OpenAI key, 32 hex digits;
    computed here from that description, not by the relay's own function."""
    relay = make_relay(allow_anonymous=True)
    assert post(relay).status_code == 200
    expected = hmac.new(TEST_KEY.encode(), b"anonymous", hashlib.sha256).hexdigest()[:32]
    assert upstream.last.body["safety_identifier"] == expected


@pytest.mark.parametrize("with_issuer", [True, False], ids=["jwt-issuer-set", "no-jwt-issuer"])
def test_startup_says_jwt_issuer_is_unused_under_iam_only_when_it_is_set(
    upstream, make_relay, issuer, caplog, with_issuer
):
    sign_in = {"jwt_issuer": issuer.issuer, "jwt_audience": "relay-app"} if with_issuer else {}
    make_relay(url_auth_type="AWS_IAM", **sign_in)
    lines = [r.getMessage() for r in caplog.records if r.name == "relay.access"]
    iam_lines = [line for line in lines if line.startswith("access: IAM function URL")]
    assert len(iam_lines) == 1
    assert ("JWT_ISSUER are not used" in iam_lines[0]) is with_issuer
