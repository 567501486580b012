"""Caller plans (docs/api.md, "Plans"): the plan a caller gets by client token, secret entry,
JWT claim (real tokens from the loopback issuer) or IAM role; every model route holding them to
it (models, token cap, system prompt, limits); a misconfigured PLANS refusing every caller;
`GET /me`; and concurrent stream slots shared by two relay processes through moto's DynamoDB."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devtools.scripts import Script
from tests.conftest import TEST_KEY
from tests.helpers import SSE
from tests.test_quota import todays_key

MODELS = "gpt-5.4-mini,gpt-5.4,gpt-5.4-pro"
BROWSER, AGENT = "client-token-browser-0001", "client-token-agent-0002"
DEFAULT = "client-token-default-0003"
PLANS = {
    "agents": {
        "models": ["gpt-5.4", "gpt-5.4-pro"],
        "allow_client_system_prompt": True,
        "max_tokens_cap": 4096,
        "roles": ["agent-runner"],
    },
    "browser": {"models": ["gpt-5.4-mini"], "max_tokens_cap": 256},
}
INSTRUCTED = {
    "model": "gpt-5.4",
    "messages": [
        {"role": "system", "content": "You are a booking agent."},
        {"role": "user", "content": "hi"},
    ],
}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def listed_models(relay, token: str) -> list[str]:
    answer = httpx.get(f"{relay.url}/v1/models", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    return [model["id"] for model in answer.json()["data"]]


def completion(relay, token: str, body: dict) -> httpx.Response:
    return httpx.post(f"{relay.url}/v1/chat/completions", json=body, headers=bearer(token))


def test_a_client_token_gets_the_plan_it_names_on_every_model_route(upstream, make_relay):
    relay = make_relay(
        allow_anonymous=False,
        allowed_models=MODELS,
        client_tokens=[DEFAULT, f"{BROWSER}:browser", f"{AGENT}:agents"],
        plans=PLANS,
    )
    assert listed_models(relay, DEFAULT) == ["gpt-5.4-mini", "gpt-5.4", "gpt-5.4-pro"]
    assert listed_models(relay, BROWSER) == ["gpt-5.4-mini"]
    assert listed_models(relay, AGENT) == ["gpt-5.4", "gpt-5.4-pro"]
    # The agent's instructions pass; the same from the browser plan's caller are refused.
    assert completion(relay, AGENT, INSTRUCTED).status_code == 200
    assert upstream.last.body["messages"][0]["content"] == "You are a booking agent."
    refused = completion(relay, BROWSER, {**INSTRUCTED, "model": "gpt-5.4-mini"})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "messages[0].role"
    # The plan's models and cap, on /chat, /v1/responses and /v1/models/{id} too.
    chat = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=bearer(AGENT))
    assert chat.status_code == 200 and upstream.last.body["model"] == "gpt-5.4"
    assert upstream.last.body["max_completion_tokens"] == 4096
    mini = {"input": "hi", "model": "gpt-5.4-mini"}
    answer = httpx.post(f"{relay.url}/v1/responses", json=mini, headers=bearer(AGENT))
    assert answer.status_code == 400 and "not allowed" in answer.json()["error"]["message"]
    gone = httpx.get(f"{relay.url}/v1/models/gpt-5.4-mini", headers=bearer(AGENT))
    assert gone.status_code == 404
    over_cap = {"prompt": "hi", "max_tokens": 300}
    assert httpx.post(f"{relay.url}/chat", json=over_cap, headers=bearer(AGENT)).status_code == 200
    assert (
        httpx.post(f"{relay.url}/chat", json=over_cap, headers=bearer(BROWSER)).status_code == 422
    )


def test_a_secret_entry_names_its_tokens_plan_and_bare_strings_stay_default(
    upstream, make_relay, secrets
):
    name = f"relay-{uuid.uuid4().hex[:8]}"
    value = {"api_key": TEST_KEY, "client_tokens": [BROWSER, {"token": AGENT, "plan": "agents"}]}
    secrets.create_secret(Name=name, SecretString=json.dumps(value))
    relay = make_relay(
        openai_api_key=None,
        openai_secret_id=name,
        allow_anonymous=False,
        allowed_models=MODELS,
        plans=PLANS,
    )
    me = httpx.get(f"{relay.url}/me", headers=bearer(AGENT)).json()
    assert me["plan"] == "agents" and me["limits"]["models"] == ["gpt-5.4", "gpt-5.4-pro"]
    assert httpx.get(f"{relay.url}/me", headers=bearer(BROWSER)).json()["plan"] == "default"


def test_a_signed_in_user_gets_the_first_plan_their_claim_names(upstream, make_relay, issuer):
    relay = make_relay(
        allow_anonymous=False,
        allowed_models=MODELS,
        plans=PLANS,
        jwt_issuer=issuer.issuer,
        jwt_audience="relay-app",
        jwt_plan_claim="cognito:groups",
    )

    def plan_of(**claims) -> str:
        answer = httpx.get(f"{relay.url}/me", headers=bearer(issuer.token(**claims)))
        assert answer.status_code == 200, answer.text
        return answer.json()["plan"]

    assert plan_of(**{"cognito:groups": ["staff", "browser", "agents"]}) == "browser"
    assert plan_of(**{"cognito:groups": ["agents"]}) == "agents"
    assert plan_of(**{"cognito:groups": ["staff"]}) == "default"
    assert plan_of() == "default"  # no such claim
    signed_in = bearer(issuer.token(**{"cognito:groups": ["browser"]}))
    refused = httpx.post(f"{relay.url}/v1/chat/completions", json=INSTRUCTED, headers=signed_in)
    assert refused.status_code == 400  # the browser plan's model list has no gpt-5.4


def test_a_scope_claim_names_the_plan_by_its_space_separated_values(upstream, make_relay, issuer):
    relay = make_relay(
        allow_anonymous=False,
        allowed_models=MODELS,
        plans=PLANS,
        jwt_issuer=issuer.issuer,
        jwt_audience="relay-app",
        jwt_plan_claim="scope",
    )
    token = issuer.token(scope="openid agents")
    assert completion(relay, token, INSTRUCTED).status_code == 200


def test_an_iam_caller_gets_the_plan_that_lists_its_role(upstream, make_relay):
    relay = make_relay(
        url_auth_type="AWS_IAM",
        aws_lwa_invoke_mode="response_stream",
        allowed_models=MODELS,
        plans=PLANS,
    )

    def as_role(role: str) -> httpx.Response:
        arn = f"arn:aws:sts::123456789012:assumed-role/{role}/session-1"
        context = json.dumps({"authorizer": {"iam": {"userArn": arn}}})
        return httpx.get(f"{relay.url}/me", headers={"x-amzn-request-context": context})

    agent = as_role("agent-runner").json()
    assert (agent["plan"], agent["caller"]) == (
        "agents",
        "iam:arn:aws:sts::123456789012:assumed-role/agent-runner",
    )
    assert as_role("web-backend").json()["plan"] == "default"


@pytest.mark.parametrize(
    ("plans", "reason"),
    [
        ({"agents": {"model": ["gpt-5.4"]}}, "model"),  # unknown field
        ({"agents": {"models": ["gpt-9"]}}, "not in ALLOWED_MODELS"),
        ({"agents": {"max_concurrent_streams": 2}}, "need QUOTA_TABLE"),
        ({"a": {"roles": ["r"]}, "b": {"roles": ["r"]}}, "role 'r'"),
        ("[]", "not a JSON object"),
    ],
)
def test_a_misconfigured_plan_refuses_every_caller_and_is_logged_once(
    upstream, make_relay, caplog, plans, reason
):
    relay = make_relay(allow_anonymous=False, client_tokens=[BROWSER], plans=plans)
    for _ in range(2):
        answer = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=bearer(BROWSER))
        assert answer.status_code == 503
        assert answer.json()["error"]["type"] == "configuration_error"
        assert httpx.get(f"{relay.url}/me", headers=bearer(BROWSER)).status_code == 503
    assert upstream.requests == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and reason in errors[0]


def test_a_token_naming_a_missing_plan_refuses_that_caller_and_is_logged_once(
    upstream, make_relay, caplog
):
    relay = make_relay(
        allow_anonymous=False,
        allowed_models=MODELS,
        client_tokens=[BROWSER, f"{AGENT}:agent"],
        plans=PLANS,
    )
    for _ in range(2):
        answer = completion(relay, AGENT, {"messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 503
        assert answer.json()["error"]["type"] == "configuration_error"
    assert completion(relay, BROWSER, {"messages": [{"role": "user", "content": "hi"}]}).is_success
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "'agent'" in errors[0]


def test_me_shows_the_plan_its_limits_and_what_is_used_and_left(upstream, make_relay, quota_table):
    plans = {"agents": {"rate_limit_per_minute": 50, "max_concurrent_streams": 3}}
    relay = make_relay(
        allow_anonymous=False,
        client_tokens=[BROWSER, f"{AGENT}:agents"],
        plans=plans,
        quota_table=quota_table,
        token_budget_per_day=10_000,
        max_tokens_cap=100,
    )
    if time.time() % 60 > 55:  # the requests and the read share one clock minute
        time.sleep(60.5 - time.time() % 60)
    assert httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=bearer(AGENT)).is_success
    deadline = time.monotonic() + 10
    while True:  # the charge (and the slot's return) follows the end of the response
        me = httpx.get(f"{relay.url}/me", headers=bearer(AGENT))
        assert me.status_code == 200
        body = me.json()
        if body["used"]["tokens_today"] < 100 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert body["caller"].startswith("token:") and body["plan"] == "agents"
    assert body["limits"] == {
        "models": ["gpt-5.4-mini"],
        "max_tokens_cap": 100,
        "rate_limit_per_minute": 50,
        "token_budget_per_day": 10_000,
        "max_concurrent_streams": 3,
        "allow_client_system_prompt": False,
    }
    used = body["used"]
    assert (used["requests_this_minute"], used["requests_today"], used["streams_open"]) == (1, 1, 0)
    assert 0 < used["tokens_today"] < 100  # settled to the real usage
    assert body["left"] == {
        "requests_this_minute": 49,
        "tokens_today": 10_000 - used["tokens_today"],
        "streams": 3,
    }
    assert me.headers["cache-control"] == "no-store"
    assert BROWSER not in me.text and AGENT not in me.text and TEST_KEY not in me.text
    # /me counts nothing itself.
    again = httpx.get(f"{relay.url}/me", headers=bearer(AGENT)).json()["used"]
    assert again["requests_today"] == 1
    assert httpx.get(f"{relay.url}/me").status_code == 401


def test_me_without_limits_shows_no_usage(relay):
    me = httpx.get(f"{relay.url}/me").json()
    assert me["caller"] == "anonymous" and me["plan"] == "default"
    assert me["used"] is None and me["left"] is None
    assert me["limits"]["rate_limit_per_minute"] is None


def open_stream(relay, token: str, results: list, release: threading.Event) -> None:
    """One streamed request: a 200 holds its stream open until `release`, then hangs up."""
    body = {"prompt": "tell me a long story"}
    with httpx.stream(
        "POST", f"{relay.url}/chat", json=body, headers={**SSE, **bearer(token)}, timeout=60
    ) as response:
        if response.status_code == 200:
            results.append((200, None, None))
            # Keep the reader: a generator dropped after `next` closes the response with it.
            chunks = response.iter_raw()
            next(chunks)
            release.wait(60)
            return
        response.read()
        kind = response.json()["error"]["type"]
        results.append((response.status_code, kind, response.headers.get("retry-after")))


def test_two_stream_slots_admit_exactly_two_of_twenty_streams_over_two_relays(
    upstream, make_relay, quota_table, dynamodb
):
    settings = {
        "allow_anonymous": False,
        "client_tokens": [BROWSER, f"{AGENT}:agents"],
        "plans": {"agents": {"max_concurrent_streams": 2}},
        "quota_table": quota_table,
    }
    relays = [make_relay(**settings), make_relay(**settings)]
    upstream.default = Script(tokens=["once ", "upon ", "a ", "time"], delay_s=30)
    results: list[tuple] = []
    release = threading.Event()
    with ThreadPoolExecutor(20) as pool:
        for index in range(20):
            pool.submit(open_stream, relays[index % 2], AGENT, results, release)
        deadline = time.monotonic() + 60
        while len(results) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        admitted = [result for result in results if result[0] == 200]
        refused = [result for result in results if result[0] != 200]
        chat_calls = len(upstream.requests)
        release.set()
    assert len(admitted) == 2
    assert refused == [(429, "concurrency_limited", "1")] * 18
    assert chat_calls == 2  # refused before any upstream call
    # Once both streams have ended (hung up), their slots are back.
    upstream.default = Script()
    deadline = time.monotonic() + 10
    item: dict = {}
    while time.monotonic() < deadline:
        item = dynamodb.get_item(TableName=quota_table, Key=todays_key(caller_of(AGENT)))["Item"]
        if "streams" not in item:
            break
        time.sleep(0.05)
    assert "streams" not in item
    after: list[tuple] = []
    with ThreadPoolExecutor(2) as pool:
        for relay in relays:
            pool.submit(open_stream, relay, AGENT, after, release)
    assert after == [(200, None, None)] * 2


def test_a_slot_left_by_a_dead_environment_lapses_by_itself(
    upstream, make_relay, quota_table, dynamodb
):
    relay = make_relay(
        allow_anonymous=False,
        client_tokens=[f"{AGENT}:agents"],
        plans={"agents": {"max_concurrent_streams": 1}},
        quota_table=quota_table,
    )
    lapsed = f"{int(time.time()) - 1}#deadbeef0000"
    dynamodb.update_item(
        TableName=quota_table,
        Key=todays_key(caller_of(AGENT)),
        UpdateExpression="ADD streams :slot",
        ExpressionAttributeValues={":slot": {"SS": [lapsed]}},
    )
    answer = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=bearer(AGENT))
    assert answer.status_code == 200
    item = dynamodb.get_item(TableName=quota_table, Key=todays_key(caller_of(AGENT)))["Item"]
    assert lapsed not in item.get("streams", {}).get("SS", [])


def caller_of(token: str) -> str:
    import hashlib

    return f"token:{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def test_secret_and_client_tokens_name_plans_and_a_malformed_entry_is_refused():
    from handler.credentials import (
        CredentialsUnavailable,
        parse_secret,
        split_token_plan,
        token_id,
    )

    value = {"api_key": TEST_KEY, "client_tokens": [BROWSER, {"token": AGENT, "plan": "agents"}]}
    creds = parse_secret(json.dumps(value))
    assert creds.client_tokens == (BROWSER.encode(), AGENT.encode())
    assert creds.token_plans == {token_id(AGENT.encode()): "agents"}
    assert split_token_plan("a:b:agents") == ("a:b", "agents")
    assert split_token_plan(BROWSER) == (BROWSER, None)
    for entry in ({"token": AGENT, "plan": 1}, {"token": AGENT, "tier": "x"}, {"plan": "x"}):
        with pytest.raises(CredentialsUnavailable):
            parse_secret(json.dumps({"api_key": TEST_KEY, "client_tokens": [entry]}))


def test_the_limits_are_the_callers_plans_and_a_plan_without_limits_is_not_counted(
    upstream, make_relay, quota_table, dynamodb
):
    relay = make_relay(
        allow_anonymous=False,
        client_tokens=[BROWSER, f"{AGENT}:agents"],
        plans={"agents": {"rate_limit_per_minute": 1}},
        quota_table=quota_table,
    )
    if time.time() % 60 > 55:  # the requests share one clock minute
        time.sleep(60.5 - time.time() % 60)

    def ask(token: str) -> httpx.Response:
        return httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=bearer(token))

    assert ask(AGENT).status_code == 200
    refused = ask(AGENT)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limited"
    assert [ask(BROWSER).status_code for _ in range(3)] == [200] * 3
    assert "Item" not in dynamodb.get_item(
        TableName=quota_table, Key=todays_key(caller_of(BROWSER))
    )
    assert len(upstream.requests) == 4
