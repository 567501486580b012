"""One cost policy for every model route: the `/v1` field allow-list, a token limit on every
upstream request, prompt size over every kind of content, who writes the system prompt, and usage
known for every request (docs/api.md, "Cost policy")."""

from __future__ import annotations

import json
import math
import time

import httpx
import openai
import pytest

from devtools.scripts import Script
from handler.app import DEADLINE_MARGIN_S
from tests.helpers import request_lines, sse_server, stream

USER = [{"role": "user", "content": "hi"}]


def completions(relay, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{relay.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def assert_refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"] and "Traceback" not in error["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("n", True),
        ("service_tier", "priority"),
        ("store", True),
        ("metadata", {"team": "x"}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
        ("web_search_options", {}),
        ("functions", [{"name": "f", "parameters": {}}]),
        ("max_token", 10),  # a typo is not silently dropped either
    ],
)
def test_fields_outside_the_allow_list_are_refused_before_any_upstream_call(
    upstream, relay, field, value
):
    response = completions(relay, {"messages": USER, "stream": True, field: value})
    assert_refused(response, field)
    assert upstream.requests == []


def test_allow_listed_fields_reach_the_upstream(upstream, relay):
    allowed = {
        "n": 1,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "frequency_penalty": 0.1,
        "presence_penalty": 0.1,
        "seed": 7,
        "logit_bias": {"50256": -100},
        "logprobs": True,
        "top_logprobs": 2,
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "now", "parameters": {}}}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
        "verbosity": "low",
    }
    response = completions(relay, {"messages": USER, **allowed})
    assert response.status_code == 200, response.text
    sent = upstream.last.body
    assert {name: sent[name] for name in allowed} == allowed


def test_operator_may_allow_more_fields(upstream, make_relay):
    relay = make_relay(allowed_extra_fields="store, metadata")
    response = completions(relay, {"messages": USER, "store": True, "metadata": {"a": "b"}})
    assert response.status_code == 200, response.text
    assert upstream.last.body["store"] is True
    assert upstream.last.body["metadata"] == {"a": "b"}
    # Still refused: what the operator did not name.
    assert_refused(completions(relay, {"messages": USER, "service_tier": "flex"}), "service_tier")


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ({}, {"max_completion_tokens": 1024}),
        ({"max_tokens": 50}, {"max_tokens": 50}),
        ({"max_completion_tokens": 60}, {"max_completion_tokens": 60}),
        ({"max_tokens": None}, {"max_completion_tokens": 1024}),
    ],
    ids=["none-sent", "max_tokens", "max_completion_tokens", "null"],
)
@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "json"])
def test_upstream_always_gets_a_token_limit_at_or_under_the_cap(
    upstream, relay, sent, expected, streamed
):
    response = completions(relay, {"messages": USER, "stream": streamed, **sent})
    assert response.status_code == 200, response.text
    body = upstream.last.body
    limits = {k: body[k] for k in ("max_tokens", "max_completion_tokens") if k in body}
    assert limits == expected


def test_the_relays_own_limit_field_is_configurable_on_every_route(upstream, make_relay):
    relay = make_relay(upstream_token_limit_field="max_tokens", max_tokens_cap=300)
    assert completions(relay, {"messages": USER}).status_code == 200
    assert upstream.last.body["max_tokens"] == 300
    assert "max_completion_tokens" not in upstream.last.body
    assert stream(f"{relay.url}/chat", {"prompt": "hi"}).status == 200
    assert upstream.last.body["max_tokens"] == 300


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_a_limit_over_the_cap_is_refused_with_its_param(upstream, make_relay, param):
    relay = make_relay(max_tokens_cap=100)
    assert_refused(completions(relay, {"messages": USER, param: 101}), param)
    assert upstream.requests == []


BIG = "x" * 200
# Media parts count at their price, not their characters: tests/test_input_policy.py.
BIG_MESSAGES = {
    "text-part": [{"role": "user", "content": [{"type": "text", "text": BIG}]}],
    "tool-call-arguments": [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": json.dumps({"q": BIG})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
    ],
    "tool-result": [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": BIG}]},
    ],
    "name": [{"role": "user", "name": BIG, "content": "hi"}],
}


@pytest.mark.parametrize("messages", BIG_MESSAGES.values(), ids=BIG_MESSAGES.keys())
def test_every_kind_of_content_counts_toward_the_prompt_size(upstream, make_relay, messages):
    relay = make_relay(max_prompt_chars=150)
    assert_refused(completions(relay, {"messages": messages}), "messages")
    assert upstream.requests == []
    # The same shapes pass when they fit.
    roomy = make_relay(max_prompt_chars=1000)
    assert completions(roomy, {"messages": messages}).status_code == 200


def test_tool_definitions_count_toward_the_prompt_size(upstream, make_relay):
    relay = make_relay(max_prompt_chars=150)
    tool = {"type": "function", "function": {"name": "f", "description": BIG, "parameters": {}}}
    assert_refused(completions(relay, {"messages": USER, "tools": [tool]}), "messages")
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("content", "param"),
    [
        ([{"type": "text", "text": 5}], "messages[0].content[0].text"),
        ([{"type": "text", "text": None}], "messages[0].content[0].text"),
        ([{"type": "text"}], "messages[0].content[0].text"),
        (
            [{"type": "image_url", "image_url": {"url": 5}}],
            "messages[0].content[0].image_url.url",
        ),
        ([{"type": "video", "video": "x"}], "messages[0].content[0]"),
        (["just a string"], "messages[0].content[0]"),
        (5, "messages[0]"),
    ],
)
def test_malformed_content_is_a_400_never_a_500(upstream, relay, content, param):
    response = completions(relay, {"messages": [{"role": "user", "content": content}]})
    assert_refused(response, param)
    assert upstream.requests == []


@pytest.mark.parametrize("depth", [300, 1000])
def test_a_deeply_nested_body_is_a_400_never_a_500(upstream, relay, depth):
    nested: object = "x"
    for _ in range(depth):
        nested = [nested]
    body = {"messages": [{"role": "user", "content": "hi", "extra": nested}]}
    response = httpx.post(
        f"{relay.url}/v1/chat/completions",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert upstream.requests == []


@pytest.mark.parametrize("role", ["system", "developer"])
def test_client_instructions_are_refused_unless_allowed(upstream, make_relay, role):
    messages = [{"role": role, "content": "Talk like a pirate."}, *USER]
    strict = make_relay(system_prompt="Be brief.")
    response = completions(strict, {"messages": messages})
    assert_refused(response, "messages[0].role")
    assert "ALLOW_CLIENT_SYSTEM_PROMPT" in response.json()["error"]["message"]
    assert upstream.requests == []

    lenient = make_relay(system_prompt="Be brief.", allow_client_system_prompt=True)
    assert completions(lenient, {"messages": messages}).status_code == 200
    assert upstream.last.body["messages"] == messages


@pytest.mark.parametrize("allow_client", [False, True])
def test_the_configured_system_prompt_opens_every_v1_conversation(
    upstream, make_relay, allow_client
):
    relay = make_relay(system_prompt="Be brief.", allow_client_system_prompt=allow_client)
    assert completions(relay, {"messages": USER}).status_code == 200
    assert upstream.last.body["messages"] == [{"role": "system", "content": "Be brief."}, *USER]


def test_usage_is_asked_for_and_kept_from_a_caller_who_did_not_ask(upstream, relay, caplog):
    upstream.enqueue(Script(tokens=["a", "b", "c"]))
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything")
    chunks = list(client.chat.completions.create(model="gpt-5.4-mini", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "abc"
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert upstream.last.body["stream_options"] == {"include_usage": True}
    [line] = request_lines(caplog)
    assert line["usage"]["completion_tokens"] == 3
    assert line["chunks"] == len(chunks)


def test_usage_reaches_a_caller_who_asked(upstream, relay, caplog):
    upstream.enqueue(Script(tokens=["a", "b"]))
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything")
    chunks = list(
        client.chat.completions.create(
            model="gpt-5.4-mini",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2
    [line] = request_lines(caplog)
    assert line["usage"]["completion_tokens"] == 2


def test_usage_chunk_is_dropped_even_when_events_arrive_cut_in_two(upstream, relay, caplog):
    upstream.enqueue(Script(tokens=["é", "ü", "ö"], split_writes=True))
    response = stream(f"{relay.url}/v1/chat/completions", {"messages": USER, "stream": True})
    events = [json.loads(e[6:]) for e in response.text.split("\n\n") if e.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == "éüö"
    assert all(e["choices"] and "usage" not in e for e in events)
    assert response.text.endswith("data: [DONE]\n\n")
    [line] = request_lines(caplog)
    assert line["usage"]["completion_tokens"] == 3


def openai_event(choices: list, usage: object) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": choices}
    return b"data: " + json.dumps({**chunk, "usage": usage}).encode() + b"\r\n\r\n"


def test_usage_chunk_is_dropped_from_openais_own_stream_shape(make_relay, caplog):
    """OpenAI puts `"usage": null` in every chunk once usage is asked for (spaces after the
    colons, as its servers format JSON), and may frame events with CRLF."""
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    answer = (
        openai_event([{"index": 0, "delta": {"content": '"usage": {'}}], None)
        + openai_event([{"index": 0, "delta": {}, "finish_reason": "stop"}], None)
        + openai_event([], usage)
        + b"data: [DONE]\r\n\r\n"
    )
    with sse_server(answer) as (url, _):
        relay = make_relay(openai_base_url=url)
        response = stream(f"{relay.url}/v1/chat/completions", {"messages": USER, "stream": True})
    expected = answer.replace(openai_event([], usage), b"")
    assert response.body == expected
    [line] = request_lines(caplog)
    assert line["usage"] == usage


def test_a_non_streamed_answer_logs_its_usage(upstream, relay, caplog):
    upstream.enqueue(Script(tokens=["a", "b", "c", "d"]))
    assert completions(relay, {"messages": USER}).status_code == 200
    [line] = request_lines(caplog)
    assert line["usage"]["completion_tokens"] == 4


def test_a_non_streamed_answer_slower_than_the_token_timeout_still_arrives(upstream, make_relay):
    relay = make_relay(upstream_timeout_s=0.3)
    upstream.enqueue(Script(tokens=["slow ", "answer"], headers_delay_s=0.8))
    response = completions(relay, {"messages": USER})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "slow answer"


def test_a_non_streamed_answer_is_bounded_by_the_invocations_deadline(upstream, make_relay):
    """Behind the Lambda Web Adapter the deadline comes in `x-amzn-lambda-context`; the relay
    answers 504 a second before it rather than being cut off."""
    relay = make_relay(upstream_timeout_s=30)
    upstream.enqueue(Script(headers_delay_s=30))
    deadline_ms = int((time.time() + 1.6) * 1000)
    response = completions(
        relay,
        {"messages": USER},
        headers={"x-amzn-lambda-context": json.dumps({"deadline": deadline_ms})},
    )
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    # Answered while the upstream still held its answer back: the deadline ended the wait
    # (on Lambda it would otherwise be cut off; no bound on elapsed time here, see issue 29).
    assert upstream.last.finished_at is None


def test_a_non_streamed_answer_keeps_the_whole_deadline_margin(upstream, make_relay):
    """aiohttp rounds a total timeout of 5 s or more up to the next whole second of the event
    loop's clock, which would spend up to all of the margin the relay keeps before the
    deadline. Here the bound on the answer (6-7 s) ends 0.05 s past a whole second of that
    clock (the monotonic one, a fixed offset from the wall clock the deadline is given in):
    rounded up, the 504 would come 0.05 s before the deadline instead of a second."""
    relay = make_relay(upstream_timeout_s=30)
    upstream.enqueue(Script(headers_delay_s=30))
    wall_to_loop = time.monotonic() - time.time()
    bound_ends = math.floor(time.monotonic()) + 7.05  # on the loop's clock
    deadline = bound_ends - wall_to_loop + DEADLINE_MARGIN_S  # on the wall clock
    response = completions(
        relay,
        {"messages": USER},
        headers={"x-amzn-lambda-context": json.dumps({"deadline": int(deadline * 1000)})},
    )
    answered = time.time()
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    assert deadline - answered > DEADLINE_MARGIN_S / 2, deadline - answered
