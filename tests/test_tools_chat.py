"""Frontend tools over `/chat`: `event: tool_call` frames read with the Python SSE client
(httpx-sse), tool results sent back in OpenAI's shape, the plain-text refusal, the limits, and
a bad `CHAT_TOOLS` stopping the relay at startup; against the fake OpenAI streaming a tool call."""

from __future__ import annotations

import json

import httpx
import pytest
from httpx_sse import connect_sse
from pydantic import ValidationError

from devtools.scripts import Script, ScriptedToolCall
from handler.settings import Settings
from tests.helpers import SSE, parse_sse, stream
from tests.test_quota import request_lines, tokens_today
from tests.test_runtime import CHAT_EVENT
from tests.test_tools_ui_chat import ARGUMENT_PIECES, CHAT_TOOLS, TIME_ZONE_TOOL

CALL_ID = "call_tz1"
QUESTION = {"role": "user", "content": "What time zone am I in?"}
ASSISTANT_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": CALL_ID,
            "type": "function",
            "function": {"name": "get_time_zone", "arguments": '{"city": "Paris"}'},
        }
    ],
}
TOOL_RESULT = {"role": "tool", "tool_call_id": CALL_ID, "content": "Europe/Paris"}


def time_zone_call(**script) -> Script:
    call = ScriptedToolCall("get_time_zone", ARGUMENT_PIECES, CALL_ID)
    return Script(tokens=script.pop("tokens", []), tool_calls=[call], **script)


def sse_events(url: str, body: dict) -> list[tuple[str, dict]]:
    """The events of one `/chat` answer as httpx-sse reads them."""
    with httpx.Client(timeout=30) as client, connect_sse(client, "POST", url, json=body) as source:
        source.response.raise_for_status()
        return [(event.event, event.json()) for event in source.iter_sse()]


@pytest.fixture
def tool_relay(make_relay):
    return make_relay(chat_tools=CHAT_TOOLS)


def test_a_tool_call_streams_as_tool_call_events_then_its_result_goes_back(upstream, tool_relay):
    upstream.enqueue(time_zone_call(tokens=["Checking."]), Script(tokens=["Europe/Paris."]))
    events = sse_events(f"{tool_relay.url}/chat", {"messages": [QUESTION]})
    assert events[0] == ("message", {"delta": "Checking."})
    calls = [data for name, data in events if name == "tool_call"]
    name_and_id = {"id": CALL_ID, "name": "get_time_zone"}
    assert calls == [
        {**name_and_id, "delta": ""},  # OpenAI's first chunk: the id and the name
        *({**name_and_id, "delta": piece} for piece in ARGUMENT_PIECES),
        {**name_and_id, "arguments": "".join(ARGUMENT_PIECES)},
    ]
    done = events[-1]
    assert done[0] == "done" and done[1]["finish_reason"] == "tool_calls"
    assert done[1]["usage"]["completion_tokens"] == 1 + len(ARGUMENT_PIECES)
    assert upstream.last.body["tools"][0] == {"type": "function", "function": TIME_ZONE_TOOL}

    conversation = [QUESTION, ASSISTANT_CALL, TOOL_RESULT]
    events = sse_events(f"{tool_relay.url}/chat", {"messages": conversation})
    assert [data["delta"] for name, data in events if name == "message"] == ["Europe/Paris."]
    assert upstream.last.body["messages"][1:] == [
        QUESTION,
        {key: value for key, value in ASSISTANT_CALL.items() if value is not None},
        TOOL_RESULT,
    ]


def test_the_request_narrows_the_tools_by_name_and_cannot_widen_them(upstream, tool_relay):
    sse_events(f"{tool_relay.url}/chat", {"prompt": "hi", "tools": ["get_language"]})
    assert [t["function"]["name"] for t in upstream.last.body["tools"]] == ["get_language"]
    sse_events(f"{tool_relay.url}/chat", {"prompt": "hi", "tools": []})
    assert "tools" not in upstream.last.body
    count = len(upstream.requests)
    refused = httpx.post(
        f"{tool_relay.url}/chat", json={"prompt": "hi", "tools": ["run_shell"]}, headers=SSE
    )
    assert refused.status_code == 422
    assert (
        refused.json()["error"]["message"] == "tools: 'run_shell' is not a tool this relay offers"
    )
    assert len(upstream.requests) == count


def test_plain_text_offers_no_tools_and_refuses_a_request_that_needs_them(upstream, tool_relay):
    answer = httpx.post(f"{tool_relay.url}/chat", json={"prompt": "hi"})
    assert answer.status_code == 200 and "tools" not in upstream.last.body
    count = len(upstream.requests)
    for body in (
        {"prompt": "hi", "tools": ["get_time_zone"]},
        {"messages": [QUESTION, ASSISTANT_CALL, TOOL_RESULT]},
    ):
        refused = httpx.post(f"{tool_relay.url}/chat", json=body)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["type"] == "tools_need_events"
        assert "Accept: text/event-stream" in error["message"]
    assert len(upstream.requests) == count


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([QUESTION, TOOL_RESULT], "messages.1.tool_call_id: answers no open tool call"),
        ([QUESTION, ASSISTANT_CALL], "the tool calls call_tz1 need their results"),
        ([QUESTION, ASSISTANT_CALL, QUESTION], "messages.2: the tool calls call_tz1 need"),
        (
            [QUESTION, ASSISTANT_CALL, TOOL_RESULT, TOOL_RESULT],
            "messages.3.tool_call_id: answers no open tool call",
        ),
        ([{"role": "user"}], "messages.0.content: field required"),
        ([QUESTION, {"role": "tool", "content": "x"}], "a tool message needs tool_call_id"),
        ([{**QUESTION, "tool_call_id": CALL_ID}], "only tool messages have one"),
        ([{**ASSISTANT_CALL, "role": "user"}, TOOL_RESULT], "only assistant messages have them"),
        ([QUESTION, {**ASSISTANT_CALL, "tool_calls": []}], "messages.1.tool_calls"),
    ],
)
def test_tool_results_must_answer_the_calls_before_them(upstream, tool_relay, messages, says):
    response = httpx.post(f"{tool_relay.url}/chat", json={"messages": messages}, headers=SSE)
    assert response.status_code == 422
    assert says in response.json()["error"]["message"]
    assert upstream.requests == []


def test_max_tool_steps_holds_on_chat(upstream, make_relay):
    relay = make_relay(chat_tools=CHAT_TOOLS, max_tool_steps=1)
    sse_events(f"{relay.url}/chat", {"messages": [QUESTION, ASSISTANT_CALL, TOOL_RESULT]})
    assert upstream.last.body["tool_choice"] == "none"
    second_call = {**ASSISTANT_CALL, "tool_calls": [{**ASSISTANT_CALL["tool_calls"][0]}]}
    second_call["tool_calls"][0]["id"] = "call_2"
    second = {**TOOL_RESULT, "tool_call_id": "call_2"}
    body = {"messages": [QUESTION, ASSISTANT_CALL, TOOL_RESULT, second_call, second]}
    response = httpx.post(f"{relay.url}/chat", json=body, headers=SSE)
    assert response.status_code == 422
    assert "too many tool round trips" in response.json()["error"]["message"]


def test_pings_come_before_a_slow_tool_call(upstream, make_relay):
    relay = make_relay(chat_tools=CHAT_TOOLS, ping_interval_s=0.1)
    upstream.enqueue(time_zone_call(first_delay_s=0.5))
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).events()
    assert events[0] == ("comment", "ping")
    assert [name for name, _ in events if name != "comment"][-2:] == ["tool_call", "done"]


def test_a_hang_up_mid_arguments_stops_the_model(upstream, tool_relay):
    pieces = [f'{{"n{i}": {i}, ' for i in range(50)]
    upstream.enqueue(
        Script(tokens=[], tool_calls=[ScriptedToolCall("get_time_zone", pieces)], delay_s=0.05)
    )
    with httpx.stream("POST", f"{tool_relay.url}/chat", json={"prompt": "hi"}, headers=SSE) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and '"delta":"{\\"n3' in line:
                break
    assert upstream.last.hung_up.wait(5)
    assert upstream.last.finished_at is None  # the model stopped before its last piece


def test_a_tool_step_is_charged_to_the_callers_day(
    upstream,
    make_relay,
    quota_table,
    dynamodb,
    caplog,
):
    relay = make_relay(chat_tools=CHAT_TOOLS, quota_table=quota_table, token_budget_per_day=1000)
    upstream.enqueue(time_zone_call())
    events = sse_events(f"{relay.url}/chat", {"prompt": "hi"})
    usage = events[-1][1]["usage"]
    [line] = request_lines(caplog)
    assert line["usage"] == usage
    assert tokens_today(dynamodb, quota_table) == usage["total_tokens"]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("not json", "CHAT_TOOLS must be a JSON array"),
        ('[{"name": "has space"}]', "chat_tools.0.name"),
        ('[{"name": "a", "parameters": {"type": "string"}}]', '"type": "object"'),
        ('[{"name": "a", "parameters": {"type": "object", "properties": []}}]', "properties"),
        ('[{"name": "a", "parameters": {"type": "object", "required": "a"}}]', "required"),
        ('[{"name": "a", "parameters": {"type": "object", "anyOf": {}}}]', "anyOf"),
        ('[{"name": "a", "parameters": {"type": "object", "items": {"type": "obj"}}}]', "type"),
        ('[{"name": "a"}, {"name": "a"}]', "declared twice"),
        ('[{"name": "a", "code": "rm -rf /"}]', "chat_tools.0.code"),
    ],
)
def test_an_invalid_tool_definition_is_a_configuration_error(value, says):
    with pytest.raises(ValidationError, match=says.replace("(", r"\(")):
        Settings(_env_file=None, chat_tools=value)


def test_chat_tools_with_a_bad_definition_stop_the_runtime_at_init(start_runtime, runtime_api):
    runtime = start_runtime(CHAT_TOOLS='[{"name": "bad name"}]')
    assert runtime_api.emulator.init_error_seen.wait(15)
    _, error = runtime_api.emulator.init_errors[0]
    assert "invalid configuration: chat_tools.0.name" in error["errorMessage"]
    assert runtime.process.wait(10) == 1


def test_an_empty_chat_tools_setting_offers_none():
    assert Settings(_env_file=None, chat_tools="").chat_tool_specs == {}
    assert (
        json.loads(CHAT_TOOLS)[0]["name"]
        in Settings(_env_file=None, chat_tools=CHAT_TOOLS).chat_tool_specs
    )


def test_the_lambda_deadline_cuts_a_tool_call_short_cleanly(start_runtime, runtime_api, upstream):
    pieces = [f'{{"n{i}": {i}, ' for i in range(100)]
    call = ScriptedToolCall("get_time_zone", pieces)
    upstream.enqueue(Script(tokens=[], tool_calls=[call], delay_s=0.1))
    runtime = start_runtime(CHAT_TOOLS=CHAT_TOOLS)
    assert runtime_api.emulator.polled.wait(30)
    invocation = runtime.invoke(CHAT_EVENT, deadline_in_s=1.5)
    _, body = invocation.prelude_and_body()
    events = parse_sse(body.decode())
    assert [name for name, _ in events[:2]] == ["tool_call", "tool_call"]  # pieces came through
    assert events[-1] == (
        "error",
        {
            "error": {
                "type": "upstream_timeout",
                "message": "the answer was cut short by the function's time limit",
            }
        },
    )
    assert upstream.last.hung_up.wait(1)


def test_parallel_calls_stream_apart_and_complete_in_order(upstream, tool_relay):
    calls = [
        ScriptedToolCall("get_time_zone", ['{"city": "Oslo"}'], "call_a"),
        ScriptedToolCall("get_language", ["{", "}"], "call_b"),
    ]
    upstream.enqueue(Script(tokens=[], tool_calls=calls))
    events = sse_events(f"{tool_relay.url}/chat", {"prompt": "hi"})
    complete = [data for name, data in events if name == "tool_call" and "arguments" in data]
    assert complete == [
        {"id": "call_a", "name": "get_time_zone", "arguments": '{"city": "Oslo"}'},
        {"id": "call_b", "name": "get_language", "arguments": "{}"},
    ]
    pieces = [(d["id"], d["delta"]) for name, d in events if name == "tool_call" and "delta" in d]
    assert pieces == [
        ("call_a", ""),
        ("call_a", '{"city": "Oslo"}'),
        ("call_b", ""),
        ("call_b", "{"),
        ("call_b", "}"),
    ]


def test_the_logged_completion_is_the_text_beside_a_tool_call(upstream, make_relay, caplog):
    relay = make_relay(chat_tools=CHAT_TOOLS, log_prompts=True)
    upstream.enqueue(time_zone_call(tokens=["Let me ", "look."]))
    sse_events(f"{relay.url}/chat", {"prompt": "hi"})
    [line] = request_lines(caplog)
    assert line["completion"] == "Let me look."


def test_the_console_client_asks_for_no_tools(upstream, tool_relay):
    from tests.test_console_client import chat

    upstream.enqueue(Script(tokens=["Plain."]))
    result = chat("--url", tool_relay.url, "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Plain."
    assert "tools" not in upstream.last.body
