"""Fail closed: without a configured access method every caller gets 401 (and startup says
so); anonymous use is an explicit opt-in; the secret cannot silently open the relay; each
request knows its caller, and OpenAI only ever sees that caller as a keyed hash."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from handler.access import safety_identifier
from tests.conftest import TEST_KEY

KEY_A = "sk-proj-access-before-0123456789abcdefghij"
KEY_B = "sk-proj-access-after-9876543210zyxwvutsrqp"
TOKEN = "client-token-7c1e9a4b2d8f6e3a5c0b1d2e3f4a5b6c"
CHAT = {"prompt": "hi"}
COMPLETION = {"messages": [{"role": "user", "content": "hi"}]}
ARN = "arn:aws:sts::123456789012:assumed-role/frontend/session"
ROLE = "arn:aws:sts::123456789012:assumed-role/frontend"


def _secret(secrets, value: str | dict) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return secrets.create_secret(Name=f"relay-test/{uuid.uuid4().hex}", SecretString=text)["ARN"]


def _post(relay, path="/chat", body=None, **headers):
    return httpx.post(f"{relay.url}{path}", json=body or CHAT, headers=headers, timeout=15)


def _messages(caplog, logger: str = "relay.access") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def _callers(caplog, count: int) -> list[str]:
    """The callers of the first `count` request log lines (written as each response ends)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "relay.request"]
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line)["caller"] for line in lines]
        time.sleep(0.01)


def test_with_no_access_method_every_relay_route_is_401_naming_the_ways(
    upstream, make_relay, caplog
):
    relay = make_relay(allow_anonymous=False)
    warnings = [m for m in _messages(caplog) if "refusing every caller" in m]
    assert len(warnings) == 1  # said once, at startup
    for path, body in (("/chat", CHAT), ("/v1/chat/completions", COMPLETION)):
        response = _post(relay, path, body, authorization="Bearer anything-at-all")
        assert response.status_code == 401
        message = response.json()["error"]["message"]
        for way in ("client_tokens", "CLIENT_TOKENS", "JWT_ISSUER", "AWS_IAM", "ALLOW_ANONYMOUS"):
            assert way in message
    assert upstream.requests == []
    assert httpx.get(f"{relay.url}/healthz").status_code == 200


def test_allow_anonymous_is_the_explicit_logged_opt_in(upstream, make_relay, caplog):
    relay = make_relay(allow_anonymous=True)
    assert any("ANONYMOUS callers (ALLOW_ANONYMOUS=true)" in m for m in _messages(caplog))
    assert _post(relay).status_code == 200
    assert _callers(caplog, 1) == ["anonymous"]


def test_a_bare_key_secret_carries_no_tokens_so_the_relay_stays_closed(
    upstream, make_relay, secrets, caplog
):
    relay = make_relay(
        openai_api_key=None, openai_secret_id=_secret(secrets, KEY_A), allow_anonymous=False
    )
    for _ in range(2):
        assert _post(relay).status_code == 401
    assert upstream.requests == []
    found = [m for m in _messages(caplog) if "the secret has no `client_tokens`" in m]
    assert len(found) == 1  # once per secret value, not once per request


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"api_key": "REPLACE_WITH_YOUR_OPENAI_KEY", "unused_placeholder": "x1"}, "placeholder"),
        ({"api_key": KEY_A, "client_token": [TOKEN]}, "`client_token`"),
        ({"api_key": KEY_A, "client_tokens": ""}, "not a list"),
        ({"api_key": KEY_A, "client_tokens": [""]}, "not a list"),
        ({"api_key": KEY_A, "client_tokens": None}, "not a list"),
    ],
    ids=["template-placeholder", "misspelt-field", "empty-string", "empty-token", "null"],
)
def test_a_secret_that_would_silently_change_access_is_503_with_the_reason_logged(
    upstream, make_relay, secrets, caplog, value, reason
):
    # Even with anonymous callers allowed: the placeholder is not a key to call OpenAI with.
    relay = make_relay(openai_api_key=None, openai_secret_id=_secret(secrets, value))
    response = _post(relay)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "credentials_unavailable"
    assert upstream.requests == []
    logged = [
        m for m in _messages(caplog, "relay.credentials") if m.startswith("credentials unavailable")
    ]
    assert logged and reason in logged[0]
    assert KEY_A not in logged[0] and TOKEN not in logged[0]


def test_the_templates_generated_field_is_ignored_once_the_key_is_in(upstream, make_relay, secrets):
    value = {"api_key": KEY_A, "unused_placeholder": "x1", "client_tokens": [TOKEN]}
    relay = make_relay(openai_api_key=None, openai_secret_id=_secret(secrets, value))
    assert _post(relay, authorization=f"Bearer {TOKEN}").status_code == 200


def test_with_a_secret_client_tokens_from_the_environment_are_ignored_and_said_so(
    upstream, make_relay, secrets, caplog
):
    relay = make_relay(
        openai_api_key=None,
        openai_secret_id=_secret(secrets, {"api_key": KEY_A, "client_tokens": [TOKEN]}),
        client_tokens="client-token-from-the-environment",
        allow_anonymous=False,
    )
    assert any("CLIENT_TOKENS is ignored" in m for m in _messages(caplog))
    assert _post(relay, authorization="Bearer client-token-from-the-environment").status_code == 401
    assert _post(relay, authorization=f"Bearer {TOKEN}").status_code == 200


def test_a_client_token_caller_is_a_short_hash_never_the_token(upstream, make_relay, caplog):
    relay = make_relay(client_tokens=TOKEN, allow_anonymous=False)
    assert _post(relay, authorization=f"Bearer {TOKEN}").status_code == 200
    expected = "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
    assert _callers(caplog, 1) == [expected]
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat", CHAT),
        ("/v1/chat/completions", {**COMPLETION, "stream": True}),
        ("/v1/chat/completions", COMPLETION),
    ],
    ids=["chat", "v1-stream", "v1-json"],
)
def test_openai_sees_the_caller_only_as_a_keyed_hash_replacing_the_callers_own(
    upstream, make_relay, path, body
):
    relay = make_relay(client_tokens=TOKEN, allow_anonymous=False)
    if path != "/chat":
        body = {**body, "user": "alice@example.com", "safety_identifier": "alice"}
    assert _post(relay, path, body, authorization=f"Bearer {TOKEN}").status_code == 200
    sent = upstream.last.body
    caller = "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
    assert sent["safety_identifier"] == safety_identifier(TEST_KEY, caller)
    assert "user" not in sent
    assert "alice" not in json.dumps(sent) and caller not in json.dumps(sent)


def test_behind_the_web_adapter_the_iam_caller_comes_from_its_header_only_in_that_mode(
    upstream, make_relay, caplog
):
    context = json.dumps({"authorizer": {"iam": {"userArn": ARN}}})
    lwa = make_relay(url_auth_type="AWS_IAM", aws_lwa_invoke_mode="response_stream")
    assert _post(lwa, **{"x-amzn-request-context": context}).status_code == 200
    assert _callers(caplog, 1) == [f"iam:{ROLE}"]
    assert upstream.last.body["safety_identifier"] == safety_identifier(TEST_KEY, f"iam:{ROLE}")
    # Outside the adapter a caller could write that header itself: it proves nothing.
    uvicorn_only = make_relay(url_auth_type="AWS_IAM")
    assert _post(uvicorn_only, **{"x-amzn-request-context": context}).status_code == 401
    assert len(upstream.requests) == 1


def test_concurrent_upstream_401s_share_one_secret_read(upstream, make_relay, secrets, caplog):
    arn = _secret(secrets, KEY_A)
    relay = make_relay(openai_api_key=None, openai_secret_id=arn)
    upstream.accepted_keys = {KEY_A}
    assert _post(relay).status_code == 200

    # The key is rotated; the relay still holds the old one, and eight requests at once find out.
    secrets.put_secret_value(SecretId=arn, SecretString=KEY_B)
    upstream.accepted_keys = {KEY_B}
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: _post(relay).status_code, range(8)))
    assert statuses == [200] * 8
    reads = [m for m in _messages(caplog, "relay.credentials") if "re-reading the secret" in m]
    assert len(reads) == 1

    # A key that is simply wrong is not re-read again right away, nor retried for nothing.
    upstream.accepted_keys = {"sk-nobody-has-this-key-000000"}
    before = len(upstream.requests)
    response = _post(relay)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_auth"
    assert len(upstream.requests) == before + 1
    reads = [m for m in _messages(caplog, "relay.credentials") if "re-reading the secret" in m]
    assert len(reads) == 1
