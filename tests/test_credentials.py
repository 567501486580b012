"""The key comes from Secrets Manager (moto's server), is cached, and is re-read after a 401;
client tokens guard the API; the key and the tokens never show up anywhere."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from devtools.scripts import Script
from tests.helpers import SSE, deltas_text, stream

KEY_A = "sk-proj-rotation-before-0123456789abcdefghij"
KEY_B = "sk-proj-rotation-after-9876543210zyxwvutsrqp"
TOKEN = "client-token-4f9d1c2b8e7a6d5c4b3a2f1e0d9c8b7a"


def _secret(secrets, value: str) -> str:
    name = f"relay-test/{uuid.uuid4().hex}"
    return secrets.create_secret(Name=name, SecretString=value)["ARN"]


def _secret_relay(make_relay, secret_id: str, **overrides):
    return make_relay(openai_api_key=None, openai_secret_id=secret_id, **overrides)


@pytest.mark.parametrize(
    "value",
    [KEY_A, json.dumps({"api_key": KEY_A, "organization": "org-1", "project": "proj_1"})],
    ids=["bare-key", "json"],
)
def test_both_secret_formats_are_accepted(upstream, make_relay, secrets, value):
    relay = _secret_relay(make_relay, _secret(secrets, value))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert response.status == 200
    assert upstream.last.headers["authorization"] == f"Bearer {KEY_A}"
    if value.startswith("{"):
        assert upstream.last.headers["openai-organization"] == "org-1"
        assert upstream.last.headers["openai-project"] == "proj_1"


def test_rotated_key_is_picked_up_after_401(upstream, make_relay, secrets):
    arn = _secret(secrets, KEY_A)
    upstream.accepted_keys = {KEY_A}
    relay = _secret_relay(make_relay, arn)
    assert stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).status == 200

    # Rotation: the secret and OpenAI move to the new key; the relay still caches the old one.
    secrets.put_secret_value(SecretId=arn, SecretString=KEY_B)
    upstream.accepted_keys = {KEY_B}
    upstream.enqueue(Script(tokens=["after ", "rotation"]))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert response.status == 200
    assert deltas_text(response.events()) == "after rotation"
    keys = [r.headers["authorization"] for r in upstream.requests]
    assert keys == [f"Bearer {KEY_A}", f"Bearer {KEY_A}", f"Bearer {KEY_B}"]


def test_key_rejected_even_after_refresh_is_upstream_auth(upstream, make_relay, secrets):
    upstream.accepted_keys = {"sk-some-other-key"}
    relay = _secret_relay(make_relay, _secret(secrets, KEY_A))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_auth"
    assert KEY_A[-4:] not in response.text  # OpenAI's message echoes part of the key
    assert len(upstream.requests) == 2  # the original call and one retry after a re-read


def test_secret_is_read_once_and_cached(upstream, make_relay, secrets):
    arn = _secret(secrets, KEY_A)
    relay = _secret_relay(make_relay, arn)
    stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    secrets.put_secret_value(SecretId=arn, SecretString=KEY_B)
    for _ in range(3):
        stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    # Within SECRET_TTL_S the relay keeps using what it read first.
    assert {r.headers["authorization"] for r in upstream.requests} == {f"Bearer {KEY_A}"}


def test_expired_cache_reads_the_secret_again(upstream, make_relay, secrets):
    arn = _secret(secrets, KEY_A)
    relay = _secret_relay(make_relay, arn, secret_ttl_s=0)
    stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    secrets.put_secret_value(SecretId=arn, SecretString=KEY_B)
    stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {KEY_B}"


@pytest.mark.parametrize(
    "value",
    [
        "   ",
        '{"api_key": 5}',
        '{"organization": "org-1"}',
        "{not json",
        "two words",
        json.dumps({"api_key": KEY_A, "client_tokens": "not-a-list"}),
    ],
)
def test_malformed_secret_is_503(upstream, make_relay, secrets, caplog, value):
    relay = _secret_relay(make_relay, _secret(secrets, value))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "credentials_unavailable"
    assert upstream.requests == []
    reasons = [
        r.getMessage() for r in caplog.records if "credentials unavailable" in r.getMessage()
    ]
    assert reasons, "the reason is logged"
    assert all(KEY_A not in line and value.strip() not in line for line in reasons if value.strip())


def test_missing_secret_is_503_with_the_reason_logged(upstream, make_relay, moto_endpoint, caplog):
    relay = _secret_relay(make_relay, "relay-test/does-not-exist")
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "credentials_unavailable"
    assert any("ResourceNotFoundException" in r.getMessage() for r in caplog.records)


def test_client_tokens_from_the_secret_guard_the_api(upstream, make_relay, secrets):
    secret = json.dumps({"api_key": KEY_A, "client_tokens": [TOKEN, "second-token-xyz"]})
    relay = _secret_relay(make_relay, _secret(secrets, secret), allow_anonymous=False)
    body = {"prompt": "hi"}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        response = httpx.post(f"{relay.url}/chat", json=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "unauthorized"
    response = httpx.post(
        f"{relay.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 401
    assert upstream.requests == []
    for token in (TOKEN, "second-token-xyz"):
        ok = httpx.post(
            f"{relay.url}/chat", json=body, headers={"authorization": f"Bearer {token}"}
        )
        assert ok.status_code == 200
    assert httpx.get(f"{relay.url}/healthz").status_code == 200  # health needs no token


def test_client_tokens_from_the_environment(upstream, make_relay):
    relay = make_relay(client_tokens=TOKEN, allow_anonymous=False)
    assert httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}).status_code == 401
    ok = httpx.post(
        f"{relay.url}/chat", json={"prompt": "hi"}, headers={"authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 200
