"""Per-caller limits against moto's DynamoDB server (a real HTTP endpoint): the rate limit, the
daily token budget charged with real usage (or the reservation), which limit refused, callers
counted apart, one small item per caller and day, exact admission under concurrency across
processes, retries, failing closed or open without DynamoDB, and no boto3 where keys are set."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from devtools.scripts import Script
from handler.aws import AwsEnvironment
from handler.quota import Quota
from handler.settings import Settings
from tests.conftest import TEST_KEY
from tests.helpers import SSE, counting_proxy, run_coroutine, stream

JSON = {"content-type": "application/json"}

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def request_lines(caplog, count: int = 1) -> list[dict]:
    """The request log lines, once `count` of them are written: a line is written after the
    request's charge, which happens after the client has read the end of the stream."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "relay.request"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def fresh_minute(needed_s: float = 10) -> None:
    """Wait out the end of a clock minute unless `needed_s` are left in it, so a test's
    requests share one rate-limit window."""
    into = time.time() % 60
    if into > 60 - needed_s:
        time.sleep(60.5 - into)


def todays_key(caller: str) -> dict:
    """The key of the caller's item for today (UTC), as docs/deploy.md describes it."""
    return {"pk": {"S": f"quota#{datetime.now(UTC):%Y-%m-%d}#{caller}"}}


def todays_item(dynamodb, table: str, caller: str) -> dict[str, int]:
    item = dynamodb.get_item(TableName=table, Key=todays_key(caller)).get("Item", {})
    return {name: int(value["N"]) for name, value in item.items() if "N" in value}


def tokens_today(dynamodb, table: str, caller: str = "anonymous") -> int:
    return todays_item(dynamodb, table, caller).get("tokens", 0)


def spend(dynamodb, table: str, caller: str, tokens: int) -> None:
    """Charge `caller`'s day as the relay's charge after a stream would."""
    dynamodb.update_item(
        TableName=table,
        Key=todays_key(caller),
        UpdateExpression="ADD tokens :spent",
        ExpressionAttributeValues={":spent": {"N": str(tokens)}},
    )


def admissions(quota: Quota, callers: list[str]) -> list[str]:
    """Each caller's admission in turn, in one event loop: `ok` or the refusal's type (with its
    Retry-After); the quota's connections are closed afterwards."""

    async def admit(caller: str) -> str:
        try:
            await quota.admit(caller)
        except Exception as exc:
            return getattr(exc, "type", repr(exc))
        return "ok"

    async def scenario() -> list[str]:
        try:
            return [await admit(caller) for caller in callers]
        finally:
            await quota.close()

    return run_coroutine(scenario())


def quota_for(table: str, endpoint: str, aws: AwsEnvironment | None = None, **limits) -> Quota:
    settings = Settings(
        _env_file=None, quota_table=table, aws_endpoint_url_dynamodb=endpoint, **limits
    )
    return Quota(settings, aws)


def seconds_to_utc_midnight() -> float:
    return 86_400 - time.time() % 86_400


def dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_rate_limit_admits_n_then_429_with_retry_after_and_no_upstream_call(
    upstream, make_relay, quota_table, caplog
):
    relay = make_relay(quota_table=quota_table, rate_limit_per_minute=3)
    fresh_minute()
    for _ in range(3):
        assert stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).status == 200
    refused = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=SSE)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    openai_style = httpx.post(
        f"{relay.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    assert openai_style.status_code == 429
    assert openai_style.json()["error"]["type"] == "rate_limited"
    assert "retry-after" in openai_style.headers
    assert len(upstream.requests) == 3
    refusals = request_lines(caplog, 5)[3:]
    assert [(r["error_type"], r["RateLimited"], r["QuotaExceeded"]) for r in refusals] == [
        ("rate_limited", 1, 0)
    ] * 2


def test_daily_budget_is_charged_with_real_usage_then_refuses(
    upstream, make_relay, quota_table, dynamodb, caplog
):
    relay = make_relay(quota_table=quota_table, token_budget_per_day=40)
    upstream.enqueue(Script(tokens=["a"] * 12))
    assert stream(f"{relay.url}/chat", {"prompt": "hello"}, SSE).status == 200
    [line] = request_lines(caplog)
    first = line["usage"]["total_tokens"]
    assert 12 < first < 40
    assert tokens_today(dynamodb, quota_table) == first

    upstream.enqueue(Script(tokens=["b"] * 12))
    assert stream(f"{relay.url}/chat", {"prompt": "hello"}, SSE).status == 200
    request_lines(caplog, 2)
    assert tokens_today(dynamodb, quota_table) == 2 * first >= 40

    refused = httpx.post(f"{relay.url}/chat", json={"prompt": "hello"}, headers=SSE)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "quota_exceeded"
    assert abs(int(refused.headers["retry-after"]) - seconds_to_utc_midnight()) <= 2
    assert len(upstream.requests) == 2
    refusal = request_lines(caplog, 3)[2]
    assert (refusal["error_type"], refusal["QuotaExceeded"], refusal["RateLimited"]) == (
        "quota_exceeded",
        1,
        0,
    )


def test_non_streamed_completions_are_charged_their_usage(
    upstream, make_relay, quota_table, dynamodb, caplog
):
    relay = make_relay(quota_table=quota_table, token_budget_per_day=1000)
    upstream.enqueue(Script(tokens=["x"] * 5))
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{relay.url}/v1/chat/completions", json=body).status_code == 200
    [line] = request_lines(caplog)
    assert tokens_today(dynamodb, quota_table) == line["usage"]["total_tokens"]


def test_a_stream_that_broke_off_without_usage_is_charged_its_reservation(
    upstream, make_relay, quota_table, dynamodb, caplog
):
    relay = make_relay(quota_table=quota_table, token_budget_per_day=10_000)
    upstream.enqueue(Script(tokens=["a", "b", "c", "d"], die_after=2))
    response = stream(f"{relay.url}/chat", {"prompt": "tell me a story"}, SSE)
    assert response.events()[-1][0] == "error"
    [line] = request_lines(caplog)
    assert line["usage"] is None and line["chunks"] == 2 and line["TokensEstimated"] is True
    # Charged as much as it may have cost: at least a token per byte of what went upstream,
    # plus its whole completion limit (docs/api.md, "What a cut-short stream costs").
    sent = upstream.last.body
    worst = len(json.dumps(sent["messages"], ensure_ascii=False).encode())
    assert line["charged_tokens"] > sent["max_completion_tokens"] + worst // 2
    assert tokens_today(dynamodb, quota_table) == line["charged_tokens"]


def test_a_request_refused_before_the_stream_costs_nothing(
    upstream, make_relay, quota_table, dynamodb, caplog
):
    relay = make_relay(quota_table=quota_table, token_budget_per_day=1000)
    upstream.enqueue(Script(status=500))
    assert httpx.post(f"{relay.url}/chat", json={"prompt": "x"}, headers=SSE).status_code == 502
    request_lines(caplog)
    assert tokens_today(dynamodb, quota_table) == 0


def test_each_bearer_token_is_a_caller_with_a_limit_of_its_own(upstream, make_relay, quota_table):
    alice, bob = "client-token-alice-0123", "client-token-bob-4567"
    relay = make_relay(
        quota_table=quota_table,
        rate_limit_per_minute=1,
        client_tokens=[alice, bob],
        allow_anonymous=False,
    )

    def status(token: str) -> int:
        headers = {"authorization": f"Bearer {token}"}
        return httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=headers).status_code

    fresh_minute()
    assert [status(alice), status(alice), status(bob)] == [200, 429, 200]
    assert len(upstream.requests) == 2


def test_two_callers_are_counted_apart(quota_table, dynamodb, moto_endpoint):
    limits = {"rate_limit_per_minute": 2, "token_budget_per_day": 100}
    fresh_minute()
    callers = ["jwt:alice", "jwt:alice", "jwt:alice", "jwt:bob"]
    quota = quota_for(quota_table, moto_endpoint, **limits)
    assert admissions(quota, callers) == ["ok", "ok", "rate_limited", "ok"]
    spend(dynamodb, quota_table, "jwt:bob", 100)
    quota = quota_for(quota_table, moto_endpoint, **limits)
    assert admissions(quota, ["jwt:bob"]) == ["quota_exceeded"]
    assert tokens_today(dynamodb, quota_table, "jwt:alice") == 0


def test_the_refusal_names_the_limit_that_refused(quota_table, dynamodb, moto_endpoint):
    """With both limits on, one conditional write checks both; the item as it was (returned with
    the failed condition) tells which one refused, and a refused request is counted in neither."""
    fresh_minute()
    quota = quota_for(quota_table, moto_endpoint, rate_limit_per_minute=2, token_budget_per_day=100)
    refusals: list[tuple[str, int]] = []

    async def scenario() -> list[str]:
        results = []
        for caller, spent in (
            ("jwt:carol", 0), ("jwt:carol", 0), ("jwt:carol", 0),  # the minute is full
            ("jwt:dave", 100),  # the day's budget is used up, the minute is not
            ("jwt:carol", 100),  # both: the day's budget decides
        ):  # fmt: skip
            if spent:
                spend(dynamodb, quota_table, caller, spent)
            try:
                await quota.admit(caller)
                results.append("ok")
            except Exception as exc:
                results.append(exc.type)
                refusals.append((exc.type, int(exc.headers["Retry-After"])))
        await quota.close()
        return results

    assert run_coroutine(scenario()) == [
        "ok",
        "ok",
        "rate_limited",
        "quota_exceeded",
        "quota_exceeded",
    ]
    to_minute, to_midnight = 60 - time.time() % 60, seconds_to_utc_midnight()
    (_, rate_retry), (_, day_retry), (_, both_retry) = refusals
    assert 1 <= rate_retry <= math.ceil(to_minute) + 1
    assert abs(day_retry - to_midnight) <= 2 and abs(both_retry - to_midnight) <= 2
    carol = dynamodb.get_item(TableName=quota_table, Key=todays_key("jwt:carol"))["Item"]
    assert (carol["requests"]["N"], carol["minute_requests"]["N"]) == ("2", "2")
    assert carol["minute"]["S"] == f"{datetime.now(UTC):%H:%M}"
    assert todays_item(dynamodb, quota_table, "jwt:dave").get("requests", 0) == 0


def test_a_callers_item_keeps_only_the_current_minutes_counter(
    quota_table, dynamodb, moto_endpoint
):
    """One minute counter per item, however the requests are spaced: an admission in a new
    minute replaces the last minute's counter (issue 25: 720 requests two minutes apart left 720
    counters, as each admission removed only the minute just before its own)."""
    fresh_minute()
    now = datetime.now(UTC)
    if now.hour == 0 and now.minute < 5:  # the earlier minute below must be in this day's item
        time.sleep(300.5 - time.time() % 300)
        now = datetime.now(UTC)
    earlier = f"{now - timedelta(minutes=5):%H:%M}"
    dynamodb.update_item(  # what an admission five minutes ago left behind
        TableName=quota_table,
        Key=todays_key("jwt:erin"),
        UpdateExpression="ADD requests :n, minute_requests :n SET #minute = :earlier",
        ExpressionAttributeNames={"#minute": "minute"},
        ExpressionAttributeValues={":n": {"N": "7"}, ":earlier": {"S": earlier}},
    )
    quota = quota_for(quota_table, moto_endpoint, rate_limit_per_minute=5)
    assert admissions(quota, ["jwt:erin"] * 2) == ["ok", "ok"]
    item = dynamodb.get_item(TableName=quota_table, Key=todays_key("jwt:erin"))["Item"]
    assert set(item) == {"pk", "requests", "minute", "minute_requests", "expires_at"}
    assert item["minute"]["S"] == f"{datetime.now(UTC):%H:%M}"
    assert (item["requests"]["N"], item["minute_requests"]["N"]) == ("9", "2")
    day_end = (int(time.time()) // 86_400 + 1) * 86_400
    assert int(item["expires_at"]["N"]) == day_end + 2 * 86_400


def test_both_limits_are_checked_with_one_dynamodb_call_before_the_upstream(
    upstream, make_relay, quota_table, moto_endpoint
):
    # Issue 14: the check adds at most one DynamoDB round trip before the first token. The
    # proxy in front of moto counts the calls: one admission for both limits, then the charge
    # once the stream has ended (it needs the stream's usage).
    with counting_proxy(moto_endpoint) as (endpoint, calls):
        relay = make_relay(
            quota_table=quota_table,
            rate_limit_per_minute=100,
            token_budget_per_day=10**6,
            aws_endpoint_url_dynamodb=endpoint,
        )
        before = len(calls)  # the relay's start-up may open its connection (no API call)
        assert stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).status == 200
        deadline = time.monotonic() + 5
        while len(calls) < before + 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the charge is sent after the response has ended
        assert calls[before:] == ["DynamoDB_20120810.UpdateItem"] * 2
    assert len(upstream.requests) == 1


def test_a_request_the_policy_refuses_uses_none_of_the_limit(upstream, make_relay, quota_table):
    # The limits are the last step before the upstream call. `{"prompt": ""}` is also the body
    # of init's warm-up request (handler/init.py), which must not count at every cold start.
    relay = make_relay(quota_table=quota_table, rate_limit_per_minute=1)
    fresh_minute()
    for _ in range(3):
        refused = httpx.post(f"{relay.url}/chat", content=b'{"prompt": ""}', headers=JSON)
        assert refused.status_code == 422
    assert stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).status == 200
    over = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=SSE)
    assert over.status_code == 429 and over.json()["error"]["type"] == "rate_limited"
    assert len(upstream.requests) == 1


def test_a_failed_call_is_tried_up_to_three_times_and_a_refusal_is_not(quota_table, moto_endpoint):
    """As the SDK's standard retry mode: a 5xx is tried again (up to three attempts), a failed
    condition is an answer, and three failures in a row are a failure."""
    fresh_minute()
    with counting_proxy(moto_endpoint, failures=2) as (endpoint, calls):
        quota = quota_for(quota_table, endpoint, rate_limit_per_minute=1)
        assert admissions(quota, ["jwt:frank", "jwt:frank"]) == ["ok", "rate_limited"]
    assert calls == ["DynamoDB_20120810.UpdateItem"] * 4
    with counting_proxy(moto_endpoint, failures=3) as (endpoint, calls):
        quota = quota_for(quota_table, endpoint, rate_limit_per_minute=1)
        assert admissions(quota, ["jwt:grace"]) == ["quota_unavailable"]
    assert len(calls) == 3


def test_without_keys_in_the_environment_the_sdk_credential_chain_signs(
    quota_table, moto_endpoint, dynamodb
):
    """The environment the quota's client is given has a region and no keys: they come from the
    SDKs' credential chain of the process (here the test session's environment keys)."""
    quota = quota_for(
        quota_table, moto_endpoint, AwsEnvironment(region="us-east-1"), token_budget_per_day=10
    )
    assert admissions(quota, ["jwt:heidi"]) == ["ok"]
    assert todays_item(dynamodb, quota_table, "jwt:heidi")["requests"] == 1


def start_relay_process(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """The relay app in a uvicorn process of its own, on a free loopback port."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "handler.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    for line in process.stderr:
        if match := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
            return process, match[1]
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError("the relay process did not start")


def test_exactly_the_limit_is_admitted_under_20_concurrent_requests_across_processes(
    upstream, quota_table, moto_endpoint
):
    env = {
        "PATH": os.environ["PATH"],
        "OPENAI_API_KEY": TEST_KEY,
        "OPENAI_BASE_URL": upstream.base_url,
        "QUOTA_TABLE": quota_table,
        "RATE_LIMIT_PER_MINUTE": "5",
        "ALLOW_ANONYMOUS": "true",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    relays = [start_relay_process(env) for _ in range(2)]
    try:
        urls = [url for _, url in relays]
        for url in urls:  # both processes up and their DynamoDB clients made
            assert httpx.get(f"{url}/healthz").status_code == 200
        fresh_minute(needed_s=30)  # 20 requests to two processes on a busy machine
        with ThreadPoolExecutor(20) as pool:
            statuses = list(
                pool.map(
                    lambda i: (
                        httpx.post(
                            f"{urls[i % 2]}/chat", json={"prompt": "hi"}, timeout=30
                        ).status_code
                    ),
                    range(20),
                )
            )
    finally:
        for process, _ in relays:
            process.terminate()
            process.wait(10)
    assert sorted(statuses) == [200] * 5 + [429] * 15
    assert len(upstream.requests) == 5


def test_unreachable_dynamodb_fails_closed(upstream, make_relay, quota_table, caplog):
    relay = make_relay(
        quota_table=quota_table, rate_limit_per_minute=5, aws_endpoint_url_dynamodb=dead_endpoint()
    )
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=SSE)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "quota_unavailable"
    assert upstream.requests == []
    assert any(
        r.name == "relay.quota" and "ClientConnectorError reaching DynamoDB" in r.getMessage()
        for r in caplog.records
    )


def test_unreachable_dynamodb_fails_open_when_configured_with_a_warning(
    upstream, make_relay, quota_table, caplog
):
    relay = make_relay(
        aws_endpoint_url_dynamodb=dead_endpoint(),
        quota_table=quota_table,
        rate_limit_per_minute=5,
        token_budget_per_day=1000,
        quota_fail_open=True,
    )
    assert stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).status == 200
    assert len(upstream.requests) == 1
    warnings = [r for r in caplog.records if r.name == "relay.quota" and r.levelname == "WARNING"]
    assert warnings and "QUOTA_FAIL_OPEN" in warnings[0].getMessage()


def test_a_limit_without_a_table_is_refused_at_start():
    with pytest.raises(ValueError, match="QUOTA_TABLE"):
        Settings(_env_file=None, rate_limit_per_minute=10)


def sdk_imported_by(code: str, env: dict[str, str]) -> list[str]:
    """Run `code` in a fresh interpreter with `env`; which of boto3 and botocore it imported."""
    check = "import sys, json; print(json.dumps([m for m in SDK if m in sys.modules]))"
    result = subprocess.run(
        [sys.executable, "-c", f"SDK = ('boto3', 'botocore'); {code}; {check}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_without_quota_table_boto3_is_not_imported():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUOTA_", "AWS_ENDPOINT"))}
    env["OPENAI_API_KEY"] = TEST_KEY
    assert sdk_imported_by("import handler.app", env) == []


def test_with_limits_on_and_keys_in_the_environment_no_sdk_is_imported(
    quota_table, moto_endpoint, dynamodb
):
    """As on Lambda (keys and region in the environment): the app starts, connects to DynamoDB
    and admits a request without importing boto3 or botocore."""
    env = {
        "PATH": os.environ["PATH"],
        "OPENAI_API_KEY": TEST_KEY,
        "QUOTA_TABLE": quota_table,
        "RATE_LIMIT_PER_MINUTE": "5",
        "TOKEN_BUDGET_PER_DAY": "1000",
        "AWS_ENDPOINT_URL_DYNAMODB": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    code = (
        "import asyncio, handler.app; quota = handler.app.app.state.relay.quota\n"
        "async def admit():\n"
        "    assert await quota.preconnect()\n"
        "    await quota.admit('jwt:ivan')\n"
        "    await quota.close()\n"
        "asyncio.run(admit())"
    )
    assert sdk_imported_by(code, env) == []
    assert todays_item(dynamodb, quota_table, "jwt:ivan")["requests"] == 1


def test_the_new_model_routes_share_the_callers_limit_and_budget(
    upstream, make_relay, quota_table, dynamodb, caplog
):
    """/api/chat and /v1/responses are counted and charged like /chat: one limit per caller."""
    relay = make_relay(quota_table=quota_table, rate_limit_per_minute=3, token_budget_per_day=10**6)
    fresh_minute()
    ui_body = {
        "id": "chat-1",
        "trigger": "submit-message",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
    }
    assert stream(f"{relay.url}/api/chat", ui_body).status == 200
    assert stream(f"{relay.url}/v1/responses", {"input": "hi", "stream": True}).status == 200
    assert stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).status == 200
    for path, body in (("/api/chat", ui_body), ("/v1/responses", {"input": "hi"})):
        refused = httpx.post(f"{relay.url}{path}", json=body)
        assert refused.status_code == 429, path
        assert refused.json()["error"]["type"] == "rate_limited"
    assert len(upstream.requests) == 3
    lines = request_lines(caplog, 5)
    charged = sum(line["Tokens"] for line in lines if line["status"] == 200)
    assert charged > 0 and tokens_today(dynamodb, quota_table) == charged
