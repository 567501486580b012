"""`/api/chat`'s tool parts: a `state` that is not a string (a list, an object, a number) is the
caller's mistake, refused with the contract's 422 naming the part, never a 500 (it was looked
up in a set of states, which a list or an object cannot be)."""

from __future__ import annotations

import httpx
import pytest


def user_message(text: str) -> dict:
    return {"id": "u", "role": "user", "parts": [{"type": "text", "text": text}]}


@pytest.mark.parametrize("state", [[], {}, ["output-available"], {"output-available": True}, 1])
def test_a_tool_part_whose_state_is_not_a_string_is_a_422_naming_the_part(
    upstream, make_relay, state
):
    relay = make_relay()
    tool_part = {
        "type": "tool-get_time_zone",
        "toolCallId": "call_a",
        "state": state,
        "input": {},
        "output": "UTC",
    }
    assistant = {"id": "a", "role": "assistant", "parts": [{"type": "step-start"}, tool_part]}
    body = {"messages": [user_message("hi"), assistant]}
    response = httpx.post(f"{relay.url}/api/chat", json=body, timeout=15)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["message"].startswith("messages.1.parts.1: the tool call call_a has no output yet")
    assert upstream.requests == []
