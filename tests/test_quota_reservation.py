"""A request's worst case is reserved against its caller's budget when it is admitted, and
settled to its usage when the answer ends (docs/api.md, "Per-caller limits"): a stream the
caller cuts short keeps the reservation, so a caller who always hangs up runs out of budget at
least as fast as one who reads every answer to its end. Against moto's DynamoDB and the OpenAI
double, through the relay on uvicorn."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from devtools.scripts import Script
from tests.helpers import SSE, stream
from tests.test_quota import request_lines, tokens_today

READER, HANGER = "client-token-reader-0001", "client-token-hanger-0002"
TOKENS = 50


def ask(relay, token: str) -> int:
    headers = {**SSE, "authorization": f"Bearer {token}"}
    return stream(f"{relay.url}/chat", {"prompt": "tell me a story"}, headers).status


def ask_and_hang_up(relay, token: str) -> int:
    """Read the answer's first piece, then close the connection."""
    headers = {**SSE, "authorization": f"Bearer {token}"}
    body = {"prompt": "tell me a story"}
    with httpx.stream("POST", f"{relay.url}/chat", json=body, headers=headers) as response:
        if response.status_code == 200:
            next(response.iter_raw())
        return response.status_code


def lines_of(caplog, caller_prefix: str, count: int) -> list[dict]:
    """The log lines of `caller`'s answered requests, once there are `count`."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in request_lines(caplog) if line["caller"].startswith("token:")]
        mine = [line for line in lines if line["caller"] == caller_prefix and line["status"] == 200]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.02)


def caller_of(token: str) -> str:
    return f"token:{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def test_a_caller_who_always_hangs_up_runs_out_of_budget_as_fast_as_one_who_reads(
    upstream,
    make_relay,
    quota_table,
    dynamodb,
    caplog,
):
    relay = make_relay(
        quota_table=quota_table,
        token_budget_per_day=1_500,
        max_tokens_cap=TOKENS,
        client_tokens=[READER, HANGER],
        allow_anonymous=False,
    )
    served = {READER: 0, HANGER: 0}
    for token, reads in ((READER, True), (HANGER, False)):
        for _ in range(40):
            # The answer is as long as the limit: a reader pays it all; a slow one for the
            # caller who hangs up, so the relay sees the hang-up long before the answer's end.
            upstream.enqueue(Script(tokens=["t "] * TOKENS, delay_s=0 if reads else 0.05))
            status = ask(relay, token) if reads else ask_and_hang_up(relay, token)
            if status == 429:
                upstream.scripts.clear()  # the refused request never reached the upstream
                break
            assert status == 200
            served[token] += 1
            lines_of(caplog, caller_of(token), served[token])  # settled before the next one
        else:
            raise AssertionError(f"{token} was never refused")
    upstream.scripts.clear()
    assert 1 <= served[HANGER] <= served[READER], served
    reader_lines = lines_of(caplog, caller_of(READER), served[READER])
    hanger_lines = lines_of(caplog, caller_of(HANGER), served[HANGER])
    assert all(line["usage"] is None for line in hanger_lines)  # every one was cut short
    assert all(line["usage"] is not None for line in reader_lines)
    # Each cut-short request cost at least what a whole answer costs, so the budget lasts
    # no longer for the caller who hangs up.
    assert min(line["charged_tokens"] for line in hanger_lines) >= max(
        line["charged_tokens"] for line in reader_lines
    )
    assert tokens_today(dynamodb, quota_table, caller_of(HANGER)) == sum(
        line["charged_tokens"] for line in hanger_lines
    )


def test_a_reservation_is_refunded_to_the_real_usage_when_the_answer_ends(
    upstream,
    make_relay,
    quota_table,
    dynamodb,
    caplog,
):
    relay = make_relay(quota_table=quota_table, token_budget_per_day=100_000)
    upstream.enqueue(Script(tokens=["a"] * 5))
    assert stream(f"{relay.url}/chat", {"prompt": "hello"}, SSE).status == 200
    [line] = request_lines(caplog)
    assert line["charged_tokens"] == line["usage"]["total_tokens"] < 100
    assert tokens_today(dynamodb, quota_table) == line["charged_tokens"]


def test_concurrent_requests_see_each_others_reservations(
    upstream,
    make_relay,
    quota_table,
    dynamodb,
    caplog,
):
    """Reserved at admission, a running request's worst case already counts: with room for
    about two worst cases, ten requests at once are not all admitted (before, every one was,
    as nothing was charged until the answers had ended)."""
    relay = make_relay(quota_table=quota_table, token_budget_per_day=2_000, max_tokens_cap=900)
    upstream.default = Script(tokens=["a"] * 5, first_delay_s=0.5)
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: ask_anonymously(relay), range(10)))
    assert 1 <= statuses.count(200) <= 3, statuses
    assert statuses.count(429) == 10 - statuses.count(200)
    assert len(upstream.requests) == statuses.count(200)


def ask_anonymously(relay) -> int:
    return httpx.post(
        f"{relay.url}/chat", json={"prompt": "hi"}, headers=SSE, timeout=30
    ).status_code


def test_a_request_the_upstream_refuses_is_refunded_in_full(
    upstream,
    make_relay,
    quota_table,
    dynamodb,
    caplog,
):
    relay = make_relay(quota_table=quota_table, token_budget_per_day=100_000)
    upstream.enqueue(Script(status=500))
    assert httpx.post(f"{relay.url}/chat", json={"prompt": "x"}, headers=SSE).status_code == 502
    [line] = request_lines(caplog)
    assert line["charged_tokens"] == 0
    assert tokens_today(dynamodb, quota_table) == 0
