"""The streaming response at its edges (handler/streaming.py): the first ping an interval after
the headers, an invocation deadline already within the margin or well ahead, the time left
read from the runtime's context to the second (a stream's slot is held that long), a Lambda
context header that cannot be read, no time left below zero, an empty answer, a hang-up
before the first token, and the log line naming the model that answered."""

from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path

import httpx
import pytest

from devtools.scripts import Script
from handler.streaming import invocation_time_left
from tests.helpers import SSE, deltas_text, parse_sse, request_lines, stream
from tests.test_quota import todays_key

CHAT_EVENT = json.loads((Path(__file__).parent.parent / "events" / "chat.json").read_text())
TOKENS = [f"t{i} " for i in range(10)]


def test_the_first_ping_comes_an_interval_after_the_headers_not_with_them(upstream, make_relay):
    """The headers go out when the first-frame wait ends (one interval in); they are the
    connection's first sign of life, so the first ping is due one interval after them."""
    interval = 0.5
    relay = make_relay(upstream_timeout_s=5, ping_interval_s=interval)
    upstream.enqueue(Script(tokens=["late"], first_delay_s=1.4))
    body = {"prompt": "hi"}
    with httpx.stream("POST", f"{relay.url}/chat", json=body, headers=SSE, timeout=30) as r:
        headers_at = time.monotonic()
        pieces = [(time.monotonic(), piece) for piece in r.iter_raw()]
    first_at, first = pieces[0]
    assert first == b": ping\n\n"
    # A lower bound only (half the interval): a loaded machine delays a ping, never hastens it.
    assert first_at - headers_at >= interval / 2
    events = parse_sse(b"".join(piece for _, piece in pieces).decode())
    assert deltas_text(events) == "late"


def lambda_context(deadline_in_s: float) -> dict[str, str]:
    """The adapter's `x-amzn-lambda-context` header for a deadline `deadline_in_s` from now."""
    context = {"request_id": "abc", "deadline": int((time.time() + deadline_in_s) * 1000)}
    return {**SSE, "x-amzn-lambda-context": json.dumps(context)}


def test_a_deadline_closer_than_the_margin_ends_the_stream_after_its_first_frame(upstream, relay):
    # 0.5 s left is within the 1 s margin: no time to stream, the answer ends at once.
    upstream.enqueue(Script(tokens=TOKENS, delay_s=0.4))
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, lambda_context(0.5)).events()
    assert deltas_text(events) == "t0 "
    assert events[-1] == (
        "error",
        {
            "error": {
                "type": "upstream_timeout",
                "message": "the answer was cut short by the function's time limit",
            }
        },
    )
    assert upstream.last.hung_up.wait(10)  # and the upstream was told to stop


def test_a_stream_well_within_the_adapters_deadline_runs_to_its_end(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS, delay_s=0.02))
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, lambda_context(60)).events()
    assert deltas_text(events) == "".join(TOKENS)
    assert events[-1][0] == "done"


def test_an_invocation_with_less_time_left_than_the_margin_ends_after_the_first_frame(
    start_runtime, runtime_api, upstream
):
    upstream.enqueue(Script(tokens=TOKENS, delay_s=0.4))
    runtime = start_runtime()
    assert runtime_api.emulator.polled.wait(30)  # the deadline counts from the event, not init
    invocation = runtime.invoke(CHAT_EVENT, deadline_in_s=0.8)
    _, body = invocation.prelude_and_body()
    events = parse_sse(body.decode())
    assert deltas_text(events) == "t0 "
    assert events[-1][1]["error"]["type"] == "upstream_timeout"
    assert invocation.trailers["lambda-runtime-function-error-type"] == "Function.StreamError"


def test_a_streams_slot_is_held_until_the_invocations_deadline_to_the_second(
    start_runtime, runtime_api, upstream, quota_table, dynamodb, moto_endpoint
):
    """A stream's slot (MAX_CONCURRENT_STREAMS) lapses when Lambda would have ended the
    invocation: the time left that the runtime's context gives, not a second more or less."""
    start_runtime(
        QUOTA_TABLE=quota_table,
        MAX_CONCURRENT_STREAMS="2",
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    assert runtime_api.emulator.polled.wait(30)
    upstream.enqueue(Script(tokens=["a"], first_delay_s=2))
    # A deadline half-way between two whole seconds, 15 minutes away: the slot's expiry is
    # the next whole second, whichever way the clocks round by a few milliseconds.
    deadline_in_s = 900 + (0.5 - (time.time() + 900) % 1) % 1
    invocation = runtime_api.invoke(CHAT_EVENT, deadline_in_s)
    slots: list[str] = []
    waited_until = time.monotonic() + 10
    while not slots and time.monotonic() < waited_until:
        item = dynamodb.get_item(TableName=quota_table, Key=todays_key("anonymous")).get("Item")
        slots = (item or {}).get("streams", {}).get("SS", [])
        time.sleep(0.05)
    [slot] = slots
    assert int(slot.partition("#")[0]) == math.ceil(invocation.deadline_ms / 1000)
    invocation.wait()


@pytest.mark.parametrize(
    "value",
    [
        "not json",  # not JSON at all
        '{"request_id": "abc"}',  # no deadline in it
        "[1, 2]",  # JSON, but not an object
        '{"deadline": "soon"}',  # a deadline, but not a number
        '{"deadline": true}',  # a boolean is not a time either
    ],
)
def test_a_lambda_context_header_without_a_readable_deadline_sets_none(upstream, relay, value):
    upstream.enqueue(Script(tokens=TOKENS))
    headers = {**SSE, "x-amzn-lambda-context": value}
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, headers)
    assert response.status == 200
    events = response.events()
    assert deltas_text(events) == "".join(TOKENS)
    assert events[-1][0] == "done"


def test_the_log_line_names_the_model_that_answered_not_the_one_asked_for(upstream, relay, caplog):
    """OpenAI answers an alias (`gpt-5.4-mini`) with a dated snapshot: the line says which."""
    upstream.enqueue(Script(tokens=["a"], model="gpt-5.4-mini-2026-03-01"))
    events = stream(f"{relay.url}/chat", {"prompt": "hi", "model": "gpt-5.4-mini"}, SSE).events()
    assert events[-1][1]["model"] == "gpt-5.4-mini-2026-03-01"
    [line] = request_lines(caplog)
    assert line["model"] == "gpt-5.4-mini-2026-03-01"


def test_an_empty_answer_in_plain_text_is_a_200_with_an_empty_body(upstream, relay, caplog):
    upstream.enqueue(Script(tokens=[]))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, {"accept": "text/plain"})
    assert response.status == 200
    assert response.body == b""
    [line] = request_lines(caplog)
    assert (line["outcome"], line["chunks"]) == ("ok", 0)


def test_a_hang_up_before_the_first_token_leaves_no_task_error_behind(upstream, make_relay, caplog):
    """The wait for the first frame is cancelled with the stream: left running, it fails once
    the upstream is closed and asyncio logs "Task exception was never retrieved" (an ERROR line
    per hang-up) when the task is collected."""
    relay = make_relay(upstream_timeout_s=10, ping_interval_s=0.2)
    upstream.enqueue(Script(tokens=["late"], first_delay_s=5))
    with httpx.stream("POST", f"{relay.url}/chat", json={"prompt": "hi"}, headers=SSE) as r:
        next(r.iter_raw())  # a ping: no token yet
    assert upstream.last.hung_up.wait(10)
    assert request_lines(caplog)[-1]["outcome"] == "client_disconnected"
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        gc.collect()  # a task's error is logged when the task is collected
        errors = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        assert errors == []
        time.sleep(0.05)


class LambdaContext:
    """What the runtime's context offers the app: the milliseconds left in the invocation."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_the_time_left_is_never_below_zero_once_the_deadline_has_passed():
    """Past the deadline, or within the margin of it, the time left is none at all, whether it
    comes from the runtime's context or from the adapter's header: the stream ends at once and
    a stream slot held for it lapses in the current second, not one already gone."""
    assert invocation_time_left({"aws.context": LambdaContext(1500)}, 1.0) == 0.5
    assert invocation_time_left({"aws.context": LambdaContext(500)}, 1.0) == 0.0
    assert invocation_time_left({"aws.context": LambdaContext(0)}, 0.0) == 0.0
    for deadline_s in (time.time() - 5, time.time() + 0.5):
        header = json.dumps({"deadline": deadline_s * 1000}).encode()
        scope = {"headers": [(b"x-amzn-lambda-context", header)]}
        assert invocation_time_left(scope, 1.0) == 0.0
