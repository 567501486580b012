"""Frontend tools over `/api/chat`: the real `ai` package's chat (use-chat.mjs) gets the model's
tool call as the SDK's tool parts, runs it in `onToolCall`, sends the result back with
`addToolOutput` and reads the final text, against the fake OpenAI streaming a tool call."""

from __future__ import annotations

import json

import httpx

from devtools.scripts import Script, ScriptedToolCall
from tests import test_ui_chat
from tests.helpers import logged_request
from tests.test_ui_chat import answer_text, user_message

use_chat = test_ui_chat.use_chat  # the AI SDK's chat in Node, as a fixture of this module too

TIME_ZONE_TOOL = {
    "name": "get_time_zone",
    "description": "The user's time zone, from their browser.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
OTHER_TOOL = {"name": "get_language", "parameters": {"type": "object", "properties": {}}}
CHAT_TOOLS = json.dumps([TIME_ZONE_TOOL, OTHER_TOOL])
ARGUMENT_PIECES = ['{"ci', 'ty": "Pa', 'ris"}']


def tool_relay(make_relay, **overrides):
    return make_relay(chat_tools=CHAT_TOOLS, **overrides)


def time_zone_call(pieces: list[str] = ARGUMENT_PIECES) -> Script:
    return Script(tokens=[], tool_calls=[ScriptedToolCall("get_time_zone", pieces, "call_tz1")])


def test_use_chat_runs_the_tool_and_gets_the_answer_to_its_result(upstream, make_relay, use_chat):
    relay = tool_relay(make_relay)
    upstream.enqueue(time_zone_call(), Script(tokens=["It is ", "Europe/Paris."]))
    chat = use_chat(
        f"{relay.url}/api/chat", ["Where am I?"], toolOutputs={"get_time_zone": "Europe/Paris"}
    )
    assert chat["status"] == "ready" and chat["errors"] == []
    assert chat["toolCalls"] == [
        {"toolName": "get_time_zone", "toolCallId": "call_tz1", "input": {"city": "Paris"}}
    ]
    _, assistant = chat["messages"]
    tool_parts = [p for p in assistant["parts"] if p["type"] == "tool-get_time_zone"]
    assert [(p["state"], p["input"], p["output"]) for p in tool_parts] == [
        ("output-available", {"city": "Paris"}, "Europe/Paris")
    ]
    assert answer_text(assistant) == "It is Europe/Paris."
    assert [f["finishReason"] for f in chat["finishes"]] == ["tool-calls", "stop"]
    first, second = upstream.requests
    assert first.body["tools"] == [
        {"type": "function", "function": TIME_ZONE_TOOL},
        {"type": "function", "function": OTHER_TOOL},
    ]
    assert second.body["messages"][1:] == [
        {"role": "user", "content": "Where am I?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_tz1",
                    "type": "function",
                    "function": {"name": "get_time_zone", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_tz1", "content": "Europe/Paris"},  # text as is
    ]
    assert "tool_choice" not in second.body


def test_the_tool_call_streams_as_the_sdks_tool_parts(upstream, make_relay, use_chat):
    relay = tool_relay(make_relay)
    upstream.enqueue(time_zone_call())
    raw = use_chat(f"{relay.url}/api/chat", ["Where am I?"], raw=True)
    assert raw["failure"] is None
    kinds = [chunk["type"] for chunk in raw["chunks"]]
    assert kinds == [
        "start",
        "start-step",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-available",
        "finish-step",
        "finish",
    ]
    pieces = [c["inputTextDelta"] for c in raw["chunks"] if c["type"] == "tool-input-delta"]
    assert pieces == ARGUMENT_PIECES
    start, available = raw["chunks"][2], raw["chunks"][6]
    assert (start["toolCallId"], start["toolName"]) == ("call_tz1", "get_time_zone")
    assert available["input"] == {"city": "Paris"}
    assert raw["chunks"][-1]["finishReason"] == "tool-calls"


def test_arguments_that_are_not_json_become_a_tool_input_error(upstream, make_relay, use_chat):
    relay = tool_relay(make_relay)
    upstream.enqueue(time_zone_call(['{"city": Par']), Script(tokens=["Sorry."]))
    chat = use_chat(
        f"{relay.url}/api/chat", ["Where am I?"], toolOutputs={"get_time_zone": "never used"}
    )
    assert chat["status"] == "ready" and chat["errors"] == []
    assert chat["toolCalls"] == []  # onToolCall is not run for a call it cannot read
    assistant = chat["messages"][-1]
    [part] = [p for p in assistant["parts"] if p["type"] == "tool-get_time_zone"]
    assert part["state"] == "output-error" and "not valid JSON" in part["errorText"]
    assert answer_text(assistant) == "Sorry."
    # The chat sent the failure back, so the model could answer it.
    sent = upstream.last.body["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["arguments"] == '"{\\"city\\": Par"'
    assert sent[-1]["role"] == "tool" and "not valid JSON" in sent[-1]["content"]


def test_the_transport_body_narrows_the_tools_and_cannot_widen_them(upstream, make_relay, use_chat):
    relay = tool_relay(make_relay)
    use_chat(f"{relay.url}/api/chat", ["hi"], body={"tools": ["get_language"]})
    assert [t["function"]["name"] for t in upstream.last.body["tools"]] == ["get_language"]
    use_chat(f"{relay.url}/api/chat", ["hi"], body={"tools": []})
    assert "tools" not in upstream.last.body
    count = len(upstream.requests)
    chat = use_chat(f"{relay.url}/api/chat", ["hi"], body={"tools": ["run_shell"]})
    error = json.loads(chat["error"]["message"])["error"]
    assert error["type"] == "invalid_request" and "run_shell" in error["message"]
    assert len(upstream.requests) == count  # refused before the model was called


def test_no_tools_are_offered_when_none_are_configured(upstream, relay, use_chat):
    use_chat(f"{relay.url}/api/chat", ["hi"])
    assert "tools" not in upstream.last.body
    chat = use_chat(f"{relay.url}/api/chat", ["hi"], body={"tools": ["get_time_zone"]})
    assert json.loads(chat["error"]["message"])["error"]["type"] == "invalid_request"


def tool_step(call_id: str, state: str = "output-available", **fields) -> list[dict]:
    part = {
        "type": "tool-get_time_zone",
        "toolCallId": call_id,
        "state": state,
        "input": {},
        "output": "UTC",
        **fields,
    }
    return [{"type": "step-start"}, part]


def test_at_max_tool_steps_the_model_may_call_no_more_tools(upstream, make_relay, use_chat):
    relay = tool_relay(make_relay, max_tool_steps=1)
    upstream.enqueue(time_zone_call(), Script(tokens=["Done."]))
    chat = use_chat(f"{relay.url}/api/chat", ["hi"], toolOutputs={"get_time_zone": "UTC"})
    assert answer_text(chat["messages"][-1]) == "Done."
    first, second = upstream.requests
    assert "tool_choice" not in first.body
    assert second.body["tool_choice"] == "none" and second.body["tools"]
    # A conversation beyond the limit (not one the relay let the model make) is refused.
    parts = tool_step("call_a") + tool_step("call_b")
    body = {"messages": [user_message("hi"), {"id": "a", "role": "assistant", "parts": parts}]}
    response = httpx.post(f"{relay.url}/api/chat", json=body)
    assert response.status_code == 422
    assert (
        "too many tool round trips in the conversation (2 > 1)"
        in response.json()["error"]["message"]
    )


def test_tool_definitions_and_results_count_toward_the_prompt_size(make_relay):
    relay = tool_relay(make_relay, max_prompt_chars=60)
    body = {"messages": [user_message("hi")]}
    response = httpx.post(f"{relay.url}/api/chat", json=body)
    assert response.status_code == 422  # the definitions alone are over 60 characters
    assert "the prompt is too long" in response.json()["error"]["message"]
    assert httpx.post(f"{relay.url}/api/chat", json={**body, "tools": []}).status_code == 200
    long_result = tool_step("call_a", output="x" * 61)
    body = {
        "messages": [user_message("hi"), {"id": "a", "role": "assistant", "parts": long_result}],
        "tools": [],
    }
    response = httpx.post(f"{relay.url}/api/chat", json=body)
    assert response.status_code == 422
    assert "the prompt is too long" in response.json()["error"]["message"]


def test_a_tool_call_without_its_output_is_refused_before_the_model(upstream, make_relay):
    relay = tool_relay(make_relay)
    waiting = tool_step("call_a", state="input-available")
    body = {"messages": [user_message("hi"), {"id": "a", "role": "assistant", "parts": waiting}]}
    response = httpx.post(f"{relay.url}/api/chat", json=body)
    assert response.status_code == 422
    error = response.json()["error"]["message"]
    assert "messages.1.parts.1" in error and "has no output yet" in error
    assert upstream.requests == []


def test_a_call_cut_short_mid_arguments_is_left_out(upstream, make_relay):
    relay = tool_relay(make_relay)
    parts = [*tool_step("call_a", state="input-streaming"), {"type": "text", "text": "Hm"}]
    body = {"messages": [user_message("hi"), {"id": "a", "role": "assistant", "parts": parts}]}
    assert httpx.post(f"{relay.url}/api/chat", json=body).status_code == 200
    assert upstream.last.body["messages"][-1] == {"role": "assistant", "content": "Hm"}


def test_a_tool_step_is_logged_and_charged_with_its_usage(upstream, make_relay, caplog):
    relay = tool_relay(make_relay)
    upstream.enqueue(time_zone_call())
    response = httpx.post(f"{relay.url}/api/chat", json={"messages": [user_message("hi")]})
    assert response.text.endswith("data: [DONE]\n\n")
    line = logged_request(caplog, "POST /api/chat")
    assert line["outcome"] == "ok"
    assert line["usage"]["completion_tokens"] == len(ARGUMENT_PIECES)
    assert line["chunks"] == len(ARGUMENT_PIECES) + 1  # the call's opening piece and its three


def test_parallel_calls_are_all_run_and_answered_in_one_request(upstream, make_relay, use_chat):
    relay = tool_relay(make_relay)
    calls = [
        ScriptedToolCall("get_time_zone", ['{"city": "Oslo"}'], "call_a"),
        ScriptedToolCall("get_language", ["{}"], "call_b"),
    ]
    upstream.enqueue(Script(tokens=[], tool_calls=calls), Script(tokens=["Oslo, Norwegian."]))
    outputs = {"get_time_zone": "Europe/Oslo", "get_language": {"language": "nb"}}
    chat = use_chat(f"{relay.url}/api/chat", ["Where and what?"], toolOutputs=outputs)
    assert [call["toolCallId"] for call in chat["toolCalls"]] == ["call_a", "call_b"]
    assert answer_text(chat["messages"][-1]) == "Oslo, Norwegian."
    assert len(upstream.requests) == 2  # both results went back in one request
    sent = upstream.last.body["messages"]
    assert [call["id"] for call in sent[-3]["tool_calls"]] == ["call_a", "call_b"]
    assert sent[-2:] == [
        {"role": "tool", "tool_call_id": "call_a", "content": "Europe/Oslo"},
        {"role": "tool", "tool_call_id": "call_b", "content": '{"language":"nb"}'},
    ]
