"""`/api/chat` speaks the Vercel AI SDK's UI message stream: the real `ai` package (its chat and
`DefaultChatTransport`, run in Node) gets the exact text, the usage and every failure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from devtools.scripts import Script
from handler.settings import DEFAULT_SYSTEM_PROMPT
from tests.helpers import logged_request, stream

CLIENT_DIR = Path(__file__).parent.parent / "clients" / "ai-sdk"
# Text that would break a careless framing: newlines, `data:`, quotes, JSON, emoji.
TOKENS = ["Why ", "did\n\n", "data: the ", '"chicken"… ', "{}\\ ", "🐔"]


@pytest.fixture(scope="module")
def use_chat():
    """Run the AI SDK's chat against a URL; returns what it ended with (use-chat.mjs)."""
    if not (CLIENT_DIR / "node_modules" / "ai").is_dir():
        pytest.fail(f"the `ai` package is not installed: run `npm ci` in {CLIENT_DIR} (make test)")

    def run(api: str, turns: list[str], **options) -> dict:
        request = {"api": api, "turns": turns, **options}
        done = subprocess.run(
            ["node", str(CLIENT_DIR / "use-chat.mjs"), json.dumps(request)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return run


def answer_text(message: dict) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


def test_use_chat_gets_the_exact_text_and_the_usage(upstream, relay, use_chat):
    upstream.enqueue(Script(tokens=TOKENS, delay_s=0.01))
    chat = use_chat(f"{relay.url}/api/chat", ["Tell me a joke"])
    assert chat["status"] == "ready" and chat["error"] is None
    _, assistant = chat["messages"]
    assert assistant["role"] == "assistant"
    assert answer_text(assistant) == "".join(TOKENS)
    [finish] = chat["finishes"]
    assert finish["isError"] is False and finish["finishReason"] == "stop"
    assert finish["metadata"]["model"] == "gpt-5.4-mini"
    assert finish["metadata"]["usage"]["completion_tokens"] == len(TOKENS)
    assert assistant["id"].startswith("msg-")  # the relay's request id names the answer
    assert upstream.last.body["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "Tell me a joke"},
    ]


def test_the_next_turn_sends_the_conversation_as_chat_messages(upstream, relay, use_chat):
    upstream.enqueue(Script(tokens=["First ", "answer."]), Script(tokens=["Second."]))
    chat = use_chat(f"{relay.url}/api/chat", ["one", "two"])
    assert [answer_text(m) for m in chat["messages"]] == ["one", "First answer.", "two", "Second."]
    assert upstream.last.body["messages"][1:] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "two"},
    ]


def test_the_stream_follows_the_protocol_part_by_part(upstream, relay, use_chat):
    upstream.enqueue(Script(tokens=["a", "b"]))
    raw = use_chat(f"{relay.url}/api/chat", ["hi"], raw=True)
    assert raw["failure"] is None
    kinds = [chunk["type"] for chunk in raw["chunks"]]
    assert kinds == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    assert raw["chunks"][-1]["finishReason"] == "stop"
    response = stream(f"{relay.url}/api/chat", {"messages": [user_message("hi")]})
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")


def test_upstream_dying_mid_stream_is_an_error_in_use_chat(upstream, relay, use_chat):
    upstream.enqueue(Script(tokens=["a", "b", "c", "d", "e"], delay_s=0.02, die_after=3))
    chat = use_chat(f"{relay.url}/api/chat", ["hi"])
    assert chat["status"] == "error"
    error = json.loads(chat["error"]["message"])["error"]
    assert error == {"type": "upstream_error", "message": "the model's stream broke off"}
    assert answer_text(chat["messages"][-1]) == "abc"  # what came before the failure stays
    assert chat["finishes"][0]["isError"] is True


def test_pings_while_waiting_then_a_timeout_error_part(upstream, make_relay, use_chat):
    relay = make_relay(upstream_timeout_s=1.0, ping_interval_s=0.2)
    upstream.enqueue(Script(first_delay_s=5))
    raw = use_chat(f"{relay.url}/api/chat", ["hi"], raw=True)
    [chunk] = raw["chunks"]
    assert chunk["type"] == "error"
    assert json.loads(chunk["errorText"])["error"]["type"] == "upstream_timeout"
    upstream.enqueue(Script(first_delay_s=5))
    text = stream(f"{relay.url}/api/chat", {"messages": [user_message("hi")]}).text
    assert text.startswith(": ping\n\n: ping\n\n")
    assert text.endswith('"}\n\ndata: [DONE]\n\n')


def test_a_failure_before_the_stream_is_an_http_error_for_use_chat(upstream, relay, use_chat):
    upstream.enqueue(Script(status=503))
    chat = use_chat(f"{relay.url}/api/chat", ["hi"])
    assert chat["status"] == "error"
    assert chat["error"]["name"] == "AI_APICallError"
    assert json.loads(chat["error"]["message"])["error"]["type"] == "upstream_error"


def test_the_relay_token_is_required_and_sent_as_a_transport_header(make_relay, use_chat):
    relay = make_relay(client_tokens="ui-client-token", allow_anonymous=False)
    refused = use_chat(f"{relay.url}/api/chat", ["hi"])
    assert refused["status"] == "error"
    assert json.loads(refused["error"]["message"])["error"]["type"] == "unauthorized"
    allowed = use_chat(
        f"{relay.url}/api/chat", ["hi"], headers={"authorization": "Bearer ui-client-token"}
    )
    assert allowed["status"] == "ready"


def test_the_chat_policy_applies_to_options_sent_in_the_transport_body(relay, use_chat):
    chat = use_chat(f"{relay.url}/api/chat", ["hi"], body={"model": "gpt-4-32k"})
    error = json.loads(chat["error"]["message"])["error"]
    assert error["type"] == "invalid_request" and "not allowed" in error["message"]
    chat = use_chat(f"{relay.url}/api/chat", ["hi"], body={"max_tokens": 10**6})
    assert "over the cap" in json.loads(chat["error"]["message"])["error"]["message"]


def user_message(text: str, *parts: dict) -> dict:
    return {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}, *parts]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages.0"),
        (
            {
                "messages": [
                    user_message("hi", {"type": "file", "mediaType": "image/png", "url": "x"})
                ]
            },
            "messages.0.parts.1",
        ),
        ({"messages": [user_message("hi")], "tools": ["not_offered"]}, "tools"),
        ({"messages": [user_message("hi")], "stream": True}, "stream"),
        ({"messages": [{"id": "s", "role": "tool", "parts": []}]}, "messages.0.role"),
    ],
)
def test_what_cannot_be_passed_on_as_text_is_refused(relay, body, param):
    response = httpx.post(f"{relay.url}/api/chat", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"
    assert param in response.json()["error"]["message"]


def test_display_only_parts_and_empty_answers_are_left_out(upstream, relay):
    messages = [
        user_message("one", {"type": "step-start"}),
        {"id": "a1", "role": "assistant", "parts": [{"type": "step-start"}]},
        {"id": "a2", "role": "assistant", "parts": [{"type": "reasoning", "text": "hm"}]},
        user_message("two"),
    ]
    response = stream(f"{relay.url}/api/chat", {"id": "c", "messages": messages})
    assert response.status == 200
    assert upstream.last.body["messages"][1:] == [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
    ]


def test_regenerate_replaces_the_answer_without_sending_it(upstream, relay, use_chat):
    upstream.enqueue(Script(tokens=["First."]), Script(tokens=["Again."]))
    chat = use_chat(f"{relay.url}/api/chat", ["one"], regenerate=True)
    assert [answer_text(m) for m in chat["messages"]] == ["one", "Again."]
    assert upstream.last.body["messages"][1:] == [{"role": "user", "content": "one"}]


def test_the_request_log_has_the_usage_of_a_ui_chat(upstream, relay, use_chat, caplog):
    upstream.enqueue(Script(tokens=TOKENS))
    use_chat(f"{relay.url}/api/chat", ["hi"])
    line = logged_request(caplog, "POST /api/chat")
    assert line["outcome"] == "ok"
    assert line["usage"]["completion_tokens"] == len(TOKENS)
