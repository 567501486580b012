"""Every field of every model route's body, given a JSON value of every type, gets an answer of
the contract: the model's or the policy's 4xx in the route's error shape (or a 200 where the
value happens to be valid), never a 500 or a dropped connection."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

# One value of each JSON type (and an empty object and list, which reach different checks).
CONFUSED: list[Any] = [{"k": "v"}, {}, [1], [], 7, 1.5, "x", True, None]

UI_MESSAGE = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
IMAGE_PART = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
ROUTES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "/chat": (
        {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-5.4-mini"},
        [
            "prompt",
            "messages",
            "messages.0",
            "messages.0.role",
            "messages.0.content",
            "model",
            "temperature",
            "max_tokens",
            "unknown",
        ],
    ),
    "/api/chat": (
        {"id": "c1", "trigger": "submit-message", "messageId": None, "messages": [UI_MESSAGE]},
        [
            "id",
            "trigger",
            "messageId",
            "messages",
            "messages.0",
            "messages.0.id",
            "messages.0.role",
            "messages.0.parts",
            "messages.0.parts.0",
            "messages.0.parts.0.type",
            "messages.0.parts.0.text",
            "model",
            "temperature",
            "max_tokens",
            "unknown",
        ],
    ),
    "/v1/chat/completions": (
        {
            "model": "gpt-5.4-mini",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}, IMAGE_PART]},
                {"role": "assistant", "content": "hello", "name": "a"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "stream_options": {"include_usage": True},
            "stream": True,
        },
        [
            "messages",
            "messages.0",
            "messages.0.role",
            "messages.0.content",
            "messages.0.content.0",
            "messages.0.content.0.type",
            "messages.0.content.0.text",
            "messages.0.content.1.image_url",
            "messages.0.content.1.image_url.url",
            "messages.1.name",
            "messages.1.tool_calls",
            "model",
            "stream",
            "stream_options",
            "stream_options.include_usage",
            "max_tokens",
            "max_completion_tokens",
            "n",
            "temperature",
            "top_p",
            "stop",
            "frequency_penalty",
            "presence_penalty",
            "seed",
            "logit_bias",
            "logprobs",
            "top_logprobs",
            "response_format",
            "tools",
            "tools.0",
            "tool_choice",
            "parallel_tool_calls",
            "reasoning_effort",
            "verbosity",
            "user",
            "safety_identifier",
            "unknown",
        ],
    ),
    "/v1/responses": (
        {
            "model": "gpt-5.4-mini",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "message", "role": "assistant", "content": "hello"},
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {}}],
        },
        [
            "input",
            "input.0",
            "input.0.role",
            "input.0.content",
            "input.0.content.0",
            "input.0.content.0.type",
            "input.0.content.0.text",
            "input.1.type",
            "model",
            "instructions",
            "max_output_tokens",
            "temperature",
            "top_p",
            "top_logprobs",
            "stream",
            "stream_options",
            "store",
            "include",
            "metadata",
            "text",
            "reasoning",
            "truncation",
            "tools",
            "tools.0",
            "tools.0.type",
            "tool_choice",
            "parallel_tool_calls",
            "prompt_cache_key",
            "user",
            "safety_identifier",
            "unknown",
        ],
    ),
}


def with_value(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with `value` at `path` (`messages.0.role`)."""
    changed = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = changed
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return changed


def assert_contract_error(path: str, response: httpx.Response) -> None:
    """The route's error shape: OpenAI's on /v1, the relay's own elsewhere."""
    assert response.headers["content-type"] == "application/json", response.text
    error = response.json()["error"]
    if path.startswith("/v1/"):
        assert set(error) == {"message", "type", "param", "code"}, error
        assert error["type"] == "invalid_request_error"
    else:
        assert set(error) == {"type", "message"}, error
        assert error["type"] == "invalid_request"
    assert error["message"] and "Traceback" not in error["message"]


@pytest.mark.parametrize("path", ROUTES)
def test_a_value_of_any_type_in_any_field_is_a_4xx_never_a_500(upstream, make_relay, path):
    # Images allowed, so the base body's image part reaches the model's and the policy's checks.
    relay = make_relay(allow_images=True, allow_image_urls=True)
    base, fields = ROUTES[path]
    refused = 0
    with httpx.Client(base_url=relay.url, timeout=30) as client:
        assert client.post(path, json=base).status_code == 200  # the base body is valid
        for field in fields:
            for value in CONFUSED:
                response = client.post(path, json=with_value(base, field, value))
                where = f"{path} {field}={value!r}: {response.status_code} {response.text[:200]}"
                assert response.status_code in (200, 400, 422), where
                if response.status_code != 200:
                    refused += 1
                    assert_contract_error(path, response)
    # Most confusions are refused; the few that pass are values of the field's own type.
    assert refused > len(fields) * len(CONFUSED) // 2


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        # The fuzz-found 500: a role that is an object reached `role not in CHAT_ROLES`.
        (
            "/v1/chat/completions",
            {"model": "", "stream": False, "messages": [{"role": {}, "content": ""}]},
            "messages[0].role",
        ),
        ("/v1/chat/completions", {"model": {}, "messages": [{"role": "user"}]}, "model"),
        (
            "/v1/responses",
            {"input": [{"role": "user", "content": [{"type": [], "text": "x"}]}]},
            "input[0].content[0].type",
        ),
    ],
)
def test_the_type_confusions_fuzzing_found_name_their_field(upstream, relay, path, body, param):
    response = httpx.post(f"{relay.url}{path}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert upstream.requests == []


def test_a_list_as_a_ui_message_id_is_a_422_naming_it(upstream, relay):
    body = {"messages": [{**UI_MESSAGE, "id": ["m1"]}]}
    response = httpx.post(f"{relay.url}/api/chat", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("messages.0.id: ")
    assert upstream.requests == []
