"""How the relay reads the tool calls in an upstream's stream, beyond the fake OpenAI's own well
formed ones: a call without an id (or an index) from a compatible server is named after its
index, an empty piece of arguments adds nothing, and malformed calls are the contract's upstream
error rather than a half-read call."""

from __future__ import annotations

import json

import httpx
import pytest

from devtools.scripts import Script, ScriptedToolCall
from tests.helpers import SSE, stream
from tests.test_tools_ui_chat import CHAT_TOOLS
from tests.test_upstream_streams import ui_stream_parts

FINISH = (
    b"data: "
    + json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}).encode()
    + b"\n\n"
    + b"data: [DONE]\n\n"
)


def calls_chunk(calls: object) -> bytes:
    """One chunk whose delta holds `calls` as its `tool_calls`."""
    choice = {"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


@pytest.fixture
def tool_relay(make_relay):
    return make_relay(chat_tools=CHAT_TOOLS)


def tool_call_events(relay, upstream, ending: bytes) -> list[tuple[str, dict]]:
    upstream.enqueue(Script(tokens=[], ending=ending))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert response.status == 200
    return response.events()


def test_calls_without_an_id_are_named_after_their_index(upstream, tool_relay):
    unnamed = [
        {"function": {"name": "get_time_zone", "arguments": "{}"}},  # no index: the first
        {"index": 1, "id": "", "function": {"name": "get_language", "arguments": "{}"}},
    ]
    events = tool_call_events(tool_relay, upstream, calls_chunk(unnamed) + FINISH)
    complete = [data for name, data in events if name == "tool_call" and "arguments" in data]
    assert complete == [
        {"id": "call_0", "name": "get_time_zone", "arguments": "{}"},
        {"id": "call_1", "name": "get_language", "arguments": "{}"},
    ]
    assert events[-1][0] == "done"


def test_an_empty_piece_of_arguments_adds_no_event(upstream, tool_relay):
    start = {"index": 0, "id": "call_a", "function": {"name": "get_time_zone", "arguments": ""}}
    pieces = [{"index": 0, "function": {"arguments": arguments}} for arguments in ("", "{}")]
    ending = calls_chunk([start]) + b"".join(calls_chunk([p]) for p in pieces) + FINISH
    events = tool_call_events(tool_relay, upstream, ending)
    deltas = [data["delta"] for name, data in events if name == "tool_call" and "delta" in data]
    assert deltas == ["", "{}"]  # the call's first chunk (id and name), then its one piece


def test_an_empty_piece_does_not_hide_the_next_calls_piece_in_the_same_chunk(upstream, tool_relay):
    starts = [
        {"index": 0, "id": "call_a", "function": {"name": "get_time_zone", "arguments": ""}},
        {"index": 1, "id": "call_b", "function": {"name": "get_language", "arguments": ""}},
    ]
    pieces = [
        {"index": 0, "function": {"arguments": ""}},
        {"index": 1, "function": {"arguments": "{}"}},
    ]
    ending = calls_chunk(starts) + calls_chunk(pieces) + FINISH
    events = tool_call_events(tool_relay, upstream, ending)
    complete = [data for name, data in events if name == "tool_call" and "arguments" in data]
    assert [(call["id"], call["arguments"]) for call in complete] == [
        ("call_a", ""),
        ("call_b", "{}"),
    ]


MALFORMED = {
    "not_a_list": {"index": 0, "function": {"name": "get_time_zone"}},
    "not_an_object": ["get_time_zone"],
    "arguments_not_text": [
        {"index": 0, "id": "c", "function": {"name": "get_time_zone", "arguments": {"a": 1}}}
    ],
    "no_name": [{"index": 0, "id": "c", "function": {"arguments": "{}"}}],
    "empty_name": [{"index": 0, "id": "c", "function": {"name": "", "arguments": "{}"}}],
    "name_not_text": [{"index": 0, "id": "c", "function": {"name": 7, "arguments": "{}"}}],
}


@pytest.mark.parametrize("how", sorted(MALFORMED))
def test_malformed_tool_calls_are_an_upstream_error_on_chat(upstream, tool_relay, how):
    """Before any token went out, so the caller gets the 502 itself, not a stream."""
    upstream.enqueue(Script(tokens=[], ending=calls_chunk(MALFORMED[how]) + FINISH))
    response = httpx.post(f"{tool_relay.url}/chat", json={"prompt": "hi"}, headers=SSE)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"


def test_a_calls_first_piece_opens_its_tool_input_on_api_chat(upstream, tool_relay):
    """The AI SDK's UI stream announces a call (`tool-input-start`, with its id and name) at
    its first piece, once, before the pieces of its arguments."""
    calls = [ScriptedToolCall("get_time_zone", ['{"city"', ': "Oslo"}'], "call_a")]
    upstream.enqueue(Script(tokens=[], tool_calls=calls))
    ui = {"messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    response = stream(f"{tool_relay.url}/api/chat", ui)
    assert response.status == 200
    parts = [p for p in ui_stream_parts(response.text) if p != "[DONE]"]
    inputs = [p for p in parts if p["type"].startswith("tool-input-")]
    assert inputs[:3] == [
        {"type": "tool-input-start", "toolCallId": "call_a", "toolName": "get_time_zone"},
        {"type": "tool-input-delta", "toolCallId": "call_a", "inputTextDelta": '{"city"'},
        {"type": "tool-input-delta", "toolCallId": "call_a", "inputTextDelta": ': "Oslo"}'},
    ]
    assert inputs[3]["type"] == "tool-input-available"
