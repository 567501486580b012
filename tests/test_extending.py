"""A route of the user's own, exactly as docs/extending.md writes it, reuses the relay's caller
identity and limits: it refuses callers without credentials and counts against the caller's
rate limit and daily budget (moto's DynamoDB)."""

from __future__ import annotations

import hashlib
import re
import types
from pathlib import Path

import httpx
import pytest

from handler.settings import Settings
from tests.conftest import TEST_KEY
from tests.relay_server import RelayServer
from tests.test_quota import fresh_minute, todays_item

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "client-token-extending-1"
CALLER = "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]


def documented_router():
    """The `router` of the first Python example in docs/extending.md."""
    text = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    module = types.ModuleType("my_routes")
    exec(compile(code, "docs/extending.md", "exec"), module.__dict__)
    return module.router


@pytest.fixture
def extended_relay(upstream, moto_endpoint, quota_table):
    settings = Settings(
        _env_file=None,
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        client_tokens=TOKEN,
        quota_table=quota_table,
        rate_limit_per_minute=2,
        token_budget_per_day=1000,
        aws_endpoint_url_dynamodb=moto_endpoint,
    )
    server = RelayServer(settings)
    server.app.include_router(documented_router())
    yield server.start()
    server.stop()


def test_a_users_route_refuses_callers_without_credentials(extended_relay, dynamodb, quota_table):
    url = f"{extended_relay.url}/v1/summaries"
    for headers in ({}, {"authorization": "Bearer wrong"}):
        response = httpx.post(url, json={"text": "hello"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"  # /v1: OpenAI's shape
    assert todays_item(dynamodb, quota_table, "anonymous") == {}


def test_a_users_route_counts_against_the_callers_limits(
    extended_relay,
    dynamodb,
    quota_table,
):
    url = f"{extended_relay.url}/v1/summaries"
    auth = {"authorization": f"Bearer {TOKEN}"}
    fresh_minute()
    # A body that fails its model is refused before the admission: it uses none of the limit.
    refused = httpx.post(url, json={"text": ["not", "a", "string"]}, headers=auth)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "text"
    for _ in range(2):
        answer = httpx.post(url, json={"text": "x" * 30}, headers=auth)
        assert answer.status_code == 200, answer.text
        assert answer.json()["caller"] == CALLER
    over = httpx.post(url, json={"text": "x"}, headers=auth)
    assert over.status_code == 429
    assert over.json()["error"]["type"] == "rate_limited"
    item = todays_item(dynamodb, quota_table, CALLER)
    assert item["requests"] == 2
    assert item["tokens"] == 60  # the usage the route set, charged as a model call's is
