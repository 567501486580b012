"""The page's tool in a real browser: the model's call to `get_time_zone` is run by the page
(chat-client.js's `onToolCall`), its result goes back to the relay and the model's final answer
is shown; a tool the page does not have is answered with an error the model can read."""

from __future__ import annotations

import json

import pytest

from devtools.scripts import Script, ScriptedToolCall
from infra.local_stack import DEMO_TOOLS

ANSWER = ".turn.assistant:last-child .text"
OTHER_TOOL = {"name": "get_language", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture
def tokyo_page(browser):
    """A page whose browser is in Tokyo's time zone."""
    context = browser.new_context(timezone_id="Asia/Tokyo")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    yield page
    context.close()
    assert errors == []


def ask_and_wait(page, question: str) -> None:
    page.fill("#prompt", question)
    page.press("#prompt", "Enter")
    page.wait_for_selector(".turn.assistant:last-child[aria-busy=false]", timeout=10_000)


def test_the_page_runs_its_time_zone_tool_and_shows_the_answer(upstream, make_relay, tokyo_page):
    relay = make_relay(chat_tools=DEMO_TOOLS)
    call = ScriptedToolCall("get_time_zone", ["{", "}"], "call_tz")
    upstream.enqueue(
        Script(tokens=[], tool_calls=[call]),
        Script(tokens=["You are in ", "Tokyo's time zone."]),
        Script(tokens=["Yes."]),
    )
    tokyo_page.goto(relay.url)
    ask_and_wait(tokyo_page, "What is my time zone?")
    assert tokyo_page.text_content(ANSWER) == "You are in Tokyo's time zone."
    tool_line = tokyo_page.text_content(".turn.assistant:last-child .tool")
    assert tool_line == "Tool get_time_zone: Asia/Tokyo"
    first, second = upstream.requests
    assert [t["function"]["name"] for t in first.body["tools"]] == ["get_time_zone"]
    assert second.body["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_tz",
        "content": "Asia/Tokyo",
    }
    # The next question carries the whole exchange, the tool's part included.
    ask_and_wait(tokyo_page, "Sure?")
    roles = [m["role"] for m in upstream.last.body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]


def test_a_tool_the_page_does_not_have_gets_an_error_answer(upstream, make_relay, tokyo_page):
    relay = make_relay(chat_tools=json.dumps([*json.loads(DEMO_TOOLS), OTHER_TOOL]))
    call = ScriptedToolCall("get_language", ["{}"], "call_lang")
    upstream.enqueue(Script(tokens=[], tool_calls=[call]), Script(tokens=["I cannot tell."]))
    tokyo_page.goto(relay.url)
    ask_and_wait(tokyo_page, "Which language do I speak?")
    assert tokyo_page.text_content(ANSWER) == "I cannot tell."
    result = upstream.last.body["messages"][-1]
    assert result["role"] == "tool"
    assert result["content"] == "Error: this page has no tool named get_language"
    assert tokyo_page.locator(".turn.assistant:last-child .error").count() == 0
