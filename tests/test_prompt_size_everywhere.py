"""`MAX_PROMPT_CHARS` and `MAX_MESSAGES` hold on every model route and for every field the
contract counts as prompt (docs/api.md, "Cost policy"): a body over the limit by one field alone
is refused before any upstream call, and the same body passes a relay with room for it."""

from __future__ import annotations

import httpx
import pytest

LIMIT = 200
LONG = "x" * (LIMIT + 1)  # over the limit by itself, whatever the rest of the body adds
MODEL = "gpt-5.4-mini"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def ui_message(text: str, role: str = "user") -> dict:
    return {"id": f"m-{role}-{len(text)}", "role": role, "parts": [{"type": "text", "text": text}]}


def function_tool_chat(description: str) -> dict:
    return {
        "type": "function",
        "function": {"name": "lookup", "description": description, "parameters": {}},
    }


def json_schema(description: str) -> dict:
    return {"type": "object", "description": description, "properties": {}}


# (route, body, param named in the refusal): each body is small but for one counted field.
OVERSIZED = {
    "chat prompt": ("/chat", {"prompt": LONG}, "messages"),
    "chat messages": ("/chat", {"messages": [user("hi"), user(LONG)]}, "messages"),
    "api/chat UI messages": ("/api/chat", {"messages": [ui_message(LONG)]}, "messages"),
    "completions messages": (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [user(LONG)]},
        "messages",
    ),
    "completions tools": (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [user("hi")], "tools": [function_tool_chat(LONG)]},
        "messages",
    ),
    "completions response_format": (
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [user("hi")],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": json_schema(LONG)},
            },
        },
        "messages",
    ),
    "responses input string": ("/v1/responses", {"model": MODEL, "input": LONG}, "input"),
    "responses input items": (
        "/v1/responses",
        {"model": MODEL, "input": [user("hi"), user(LONG)]},
        "input",
    ),
    "responses instructions": (
        "/v1/responses",
        {"model": MODEL, "input": "hi", "instructions": LONG},
        "input",
    ),
    "responses tools": (
        "/v1/responses",
        {
            "model": MODEL,
            "input": "hi",
            "tools": [
                {"type": "function", "name": "lookup", "description": LONG, "parameters": {}}
            ],
        },
        "input",
    ),
    "responses text format": (
        "/v1/responses",
        {
            "model": MODEL,
            "input": "hi",
            "text": {"format": {"type": "json_schema", "name": "a", "schema": json_schema(LONG)}},
        },
        "input",
    ),
}

# (route, body with three messages): over a MAX_MESSAGES of 2.
TOO_MANY = {
    "chat": ("/chat", {"messages": [user("a"), user("b"), user("c")]}),
    "api/chat": ("/api/chat", {"messages": [ui_message(t) for t in ("a", "bb", "ccc")]}),
    "completions": ("/v1/chat/completions", {"model": MODEL, "messages": [user("a")] * 3}),
    "responses": ("/v1/responses", {"model": MODEL, "input": [user("a")] * 3}),
}


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


def upstream_posts(upstream) -> int:
    return len([r for r in upstream.requests if r.method == "POST"])


@pytest.mark.parametrize("case", sorted(OVERSIZED))
def test_every_counted_field_on_every_route_is_held_to_max_prompt_chars(upstream, make_relay, case):
    path, body, param = OVERSIZED[case]
    # Instructions come from the caller only when the operator allows it.
    strict = make_relay(max_prompt_chars=LIMIT, allow_client_system_prompt=True)
    refused = httpx.post(f"{strict.url}{path}", json=body, timeout=15)
    assert refused.status_code in (400, 422), refused.text
    assert "too long" in error_of(refused)["message"]
    if path.startswith("/v1"):  # OpenAI's error shape names the parameter
        assert error_of(refused)["param"] == param
    assert upstream_posts(upstream) == 0

    roomy = make_relay(max_prompt_chars=LIMIT * 10, allow_client_system_prompt=True)
    assert httpx.post(f"{roomy.url}{path}", json=body, timeout=15).status_code == 200
    assert upstream_posts(upstream) == 1


@pytest.mark.parametrize("case", sorted(TOO_MANY))
def test_every_route_is_held_to_max_messages(upstream, make_relay, case):
    path, body = TOO_MANY[case]
    refused = httpx.post(f"{make_relay(max_messages=2).url}{path}", json=body, timeout=15)
    assert refused.status_code in (400, 422), refused.text
    assert "too many messages" in error_of(refused)["message"]
    assert upstream_posts(upstream) == 0
    allowed = httpx.post(f"{make_relay(max_messages=3).url}{path}", json=body, timeout=15)
    assert allowed.status_code == 200, allowed.text
    assert upstream_posts(upstream) == 1
