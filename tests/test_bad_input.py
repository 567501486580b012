"""Every bad request of the contract gets its status and error type, never a 500 or a trace."""

from __future__ import annotations

import httpx
import pytest

JSON = {"content-type": "application/json"}
LONG = "x" * 16001


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind"),
    [
        (b"{not json", JSON, 400, "invalid_json"),
        (b"", JSON, 400, "invalid_json"),
        (b'{"prompt": "hi"}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"prompt": "hi"}', {}, 415, "unsupported_media_type"),
        (b'{"prompt": "' + b"a" * 70000 + b'"}', JSON, 413, "body_too_large"),
        (b"[1, 2]", JSON, 422, "invalid_request"),
        (b"{}", JSON, 422, "invalid_request"),
        (b'{"prompt": ""}', JSON, 422, "invalid_request"),
        (b'{"prompt": "   "}', JSON, 422, "invalid_request"),
        (b'{"prompt": 42}', JSON, 422, "invalid_request"),
        (b'{"messages": []}', JSON, 422, "invalid_request"),
        (
            b'{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}',
            JSON,
            422,
            "invalid_request",
        ),
        (b'{"messages": [{"role": "tool", "content": "b"}]}', JSON, 422, "invalid_request"),
        (b'{"messages": [{"role": "user", "content": ["b"]}]}', JSON, 422, "invalid_request"),
        (b'{"messages": [{"role": "user"}]}', JSON, 422, "invalid_request"),
        (b'{"messages": "hello"}', JSON, 422, "invalid_request"),
        (b'{"prompt": "' + LONG.encode() + b'"}', JSON, 422, "invalid_request"),
        (b'{"prompt": "hi", "model": "gpt-5"}', JSON, 422, "invalid_request"),
        (b'{"prompt": "hi", "max_tokens": 1025}', JSON, 422, "invalid_request"),
        (b'{"prompt": "hi", "max_tokens": 0}', JSON, 422, "invalid_request"),
        (b'{"prompt": "hi", "max_tokens": "10"}', JSON, 422, "invalid_request"),
        (b'{"prompt": "hi", "temperature": 2.5}', JSON, 422, "invalid_request"),
        (b'{"prompt": "hi", "temperature": -0.1}', JSON, 422, "invalid_request"),
        (b'{"prompt": "hi", "temperature": "hot"}', JSON, 422, "invalid_request"),
        (b'{"prompt": "hi", "stream": false}', JSON, 422, "invalid_request"),
    ],
)
def test_bad_chat_request_gets_the_contract_error(upstream, relay, body, headers, status, kind):
    response = httpx.post(f"{relay.url}/chat", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == kind
    assert error["message"] and "Traceback" not in error["message"]
    assert upstream.requests == []  # nothing bad reaches the model


def test_too_many_messages_is_rejected(upstream, make_relay):
    relay = make_relay(max_messages=3)
    messages = [{"role": "user", "content": "hi"}] * 4
    response = httpx.post(f"{relay.url}/chat", json={"messages": messages})
    assert response.status_code == 422
    assert "too many messages" in response.json()["error"]["message"]


def test_oversized_chunked_body_is_rejected_without_content_length(upstream, make_relay):
    relay = make_relay(max_body_bytes=1000)

    def body():
        yield b'{"prompt": "'
        for _ in range(20):
            yield b"a" * 100
        yield b'"}'

    response = httpx.post(f"{relay.url}/chat", content=body(), headers=JSON)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "body_too_large"


@pytest.mark.parametrize(
    ("method", "path", "status", "kind"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/chat", 405, "method_not_allowed"),
        # The contract's routes and no others: a generated schema (FastAPI's, say) would
        # describe the relay's internals (route docstrings) to anyone who asks.
        ("GET", "/openapi.json", 404, "not_found"),
        ("GET", "/docs", 404, "not_found"),
    ],
)
def test_unknown_routes_and_methods(relay, method, path, status, kind):
    response = httpx.request(method, f"{relay.url}{path}")
    assert response.status_code == status
    assert response.json()["error"]["type"] == kind


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}, "model", "gpt-5"),
        (
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5000},
            "max_tokens",
            "cap",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5000},
            "max_completion_tokens",
            "cap",
        ),
        ({"messages": []}, "messages", "non-empty"),
        (
            {"messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature",
            "0 to 2",
        ),
    ],
)
def test_openai_endpoint_rejects_with_openai_style_errors(upstream, relay, body, param, says):
    response = httpx.post(f"{relay.url}/v1/chat/completions", json=body)
    assert response.status_code == 400  # OpenAI's status for an invalid request, not 422
    error = response.json()["error"]
    message = error.pop("message")
    assert error == {"type": "invalid_request_error", "param": param, "code": "invalid_request"}
    # The message says what is wrong with this field (it was compared with itself before).
    assert says in message, message
    assert upstream.requests == []


def test_openai_endpoint_invalid_json(relay):
    response = httpx.post(f"{relay.url}/v1/chat/completions", content=b"{", headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        (b'{"messages": []}', {"content-type": "text/plain"}, "unsupported_media_type"),
        (b'{"x": "' + b"a" * 70000 + b'"}', JSON, "body_too_large"),
    ],
)
def test_openai_endpoint_answers_malformed_requests_with_400(relay, body, headers, code):
    response = httpx.post(f"{relay.url}/v1/chat/completions", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == code


def test_openai_endpoint_unknown_route_is_an_openai_404(relay):
    response = httpx.post(f"{relay.url}/v1/nope", json={})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == "not_found"
