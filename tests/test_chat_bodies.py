"""What `/chat` makes of its body (handler/models.py): an unknown field is named as unknown, a
caller's system message needs the operator's opt-in, and the operator's own tools count toward
the prompt-size cap like the caller's text."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

TOOL_DESCRIPTION = "Looks up the caller's time zone from a city name. " * 20  # 1,000 characters
CHAT_TOOLS = json.dumps(
    [
        {
            "name": "get_time_zone",
            "description": TOOL_DESCRIPTION,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
)


def post(relay, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(f"{relay.url}/chat", json=body, headers=headers, timeout=15)


def test_an_unknown_field_is_named_and_called_unknown(upstream, relay):
    response = post(relay, {"prompt": "hi", "colour": "blue"})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "colour: unknown field"
    assert upstream.requests == []


def test_a_field_of_the_wrong_type_is_not_called_unknown(upstream, relay):
    response = post(relay, {"prompt": "hi", "max_tokens": "ten"})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert message.startswith("max_tokens: ")
    assert "unknown field" not in message


@pytest.mark.parametrize("allowed", [False, True], ids=["refused", "allowed"])
def test_a_callers_system_message_needs_the_operators_opt_in(upstream, make_relay, allowed):
    relay = make_relay(allow_client_system_prompt=allowed)
    messages = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "hi"},
    ]
    response = post(relay, {"messages": messages})
    if allowed:
        assert response.status_code == 200
        assert upstream.last.body["messages"][0] == messages[0]
    else:
        assert response.status_code in (400, 403, 422)
        assert "ALLOW_CLIENT_SYSTEM_PROMPT=false" in response.json()["error"]["message"]
        assert upstream.requests == []


def test_the_operators_tools_count_toward_the_prompt_size_cap(upstream, make_relay):
    """A short prompt with a 1,000-character tool description is over a 500-character cap
    (tools are offered on the event stream only)."""
    events = {"accept": "text/event-stream"}
    strict = make_relay(chat_tools=CHAT_TOOLS, max_prompt_chars=500)
    refused = post(strict, {"prompt": "What time zone am I in?"}, **events)
    assert refused.status_code in (400, 413, 422), refused.text
    assert "too long" in refused.json()["error"]["message"]
    assert upstream.requests == []

    roomy = make_relay(chat_tools=CHAT_TOOLS, max_prompt_chars=5000)
    assert post(roomy, {"prompt": "What time zone am I in?"}, **events).status_code == 200
    assert upstream.last.body["tools"][0]["function"]["description"] == TOOL_DESCRIPTION


def assistant_call(call_id: str) -> dict:
    function = {"name": "get_time_zone", "arguments": '{"city": "Paris"}'}
    return {
        "role": "assistant",
        "tool_calls": [{"id": call_id, "type": "function", "function": function}],
    }


def test_a_history_with_one_tool_call_and_its_result_passes(upstream, make_relay):
    relay = make_relay(chat_tools=CHAT_TOOLS)
    messages = [
        {"role": "user", "content": "What time zone am I in?"},
        assistant_call("call_1"),
        {"role": "tool", "tool_call_id": "call_1", "content": "Europe/Paris"},
    ]
    response = post(relay, {"messages": messages}, accept="text/event-stream")
    assert response.status_code == 200
    sent = [m for m in upstream.last.body["messages"] if m["role"] == "assistant"]
    assert [call["id"] for call in sent[0]["tool_calls"]] == ["call_1"]


@pytest.mark.parametrize(
    "assistant",
    [assistant_call(""), {"role": "assistant", "tool_calls": []}],
    ids=["empty-call-id", "no-calls"],
)
def test_a_tool_call_without_an_id_or_an_empty_call_list_is_refused(
    upstream, make_relay, assistant
):
    relay = make_relay(chat_tools=CHAT_TOOLS)
    messages = [{"role": "user", "content": "What time zone am I in?"}, assistant]
    response = post(relay, {"messages": messages}, accept="text/event-stream")
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("messages.1.tool_calls")
    assert upstream.requests == []


@pytest.mark.parametrize(
    "options",
    [{"temperature": t} for t in (0, 0.5, 1.5, 2)] + [{"max_tokens": 1}],
    ids=["temperature-0", "temperature-0.5", "temperature-1.5", "temperature-2", "max-tokens-1"],
)
def test_chat_options_inside_their_bounds_pass_to_the_upstream(upstream, relay, options):
    assert post(relay, {"prompt": "hi", **options}).status_code == 200
    ((name, value),) = options.items()
    sent = upstream.last.body
    assert sent.get(name, sent.get("max_completion_tokens")) == value


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_streamed_completion_always_asks_the_upstream_for_usage(upstream, relay, stream):
    """Usage is what the caller is charged: asked for on every stream, whatever the caller
    asked (and a whole answer carries it anyway, so nothing is added there)."""
    body = {
        "model": "gpt-5.4-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": False}
    response = httpx.post(f"{relay.url}/v1/chat/completions", json=body, timeout=15)
    assert response.status_code == 200
    sent = upstream.last.body
    assert sent["stream"] is stream
    assert sent.get("stream_options") == ({"include_usage": True} if stream else None)


def test_a_chat_request_always_asks_the_upstream_for_a_stream_with_usage(upstream, relay):
    assert post(relay, {"prompt": "hi"}).status_code == 200
    sent = upstream.last.body
    assert (sent["stream"], sent["stream_options"]) == (True, {"include_usage": True})


@pytest.mark.parametrize("asked", [None, False, True], ids=["not-asked", "asked-not", "asked"])
def test_a_streamed_completion_shows_the_usage_chunk_only_to_a_caller_who_asked(
    upstream, relay, asked
):
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything")
    options = {} if asked is None else {"stream_options": {"include_usage": asked}}
    chunks = list(
        client.chat.completions.create(
            model="gpt-5.4-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            **options,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.usage is not None]) == (1 if asked else 0)


def test_api_chat_offers_the_operators_tools_to_the_model(upstream, make_relay):
    """`/api/chat` always answers as an event stream, so the tools are always offered."""
    relay = make_relay(chat_tools=CHAT_TOOLS)
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Time zone?"}]}
    response = httpx.post(f"{relay.url}/api/chat", json={"messages": [message]}, timeout=15)
    assert response.status_code == 200
    offered = [tool["function"]["name"] for tool in upstream.last.body["tools"]]
    assert offered == ["get_time_zone"]
