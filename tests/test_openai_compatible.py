"""`/v1/chat/completions` is OpenAI's API: the official SDK works against it unchanged."""

from __future__ import annotations

import httpx
import openai
import pytest

from devtools.scripts import Script
from tests.helpers import stream

TOKENS = ["Why ", "did\n", "the ", "chicken… ", "🐔"]


def test_official_sdk_streams_through_the_relay(upstream, make_relay):
    relay = make_relay(client_tokens="sdk-client-token")
    upstream.enqueue(Script(tokens=TOKENS, delay_s=0.01))
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="sdk-client-token")
    pieces = []
    with client.chat.completions.create(
        model="gpt-5.4-mini",
        messages=[{"role": "user", "content": "joke"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as completion:
        for chunk in completion:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = chunk.usage
    assert "".join(pieces) == "".join(TOKENS)
    assert usage.completion_tokens == len(TOKENS)
    # The relay authenticates the client with its own token and OpenAI with the real key.
    assert upstream.last.headers["authorization"].startswith("Bearer sk-test-relay-key")


def test_official_sdk_non_streaming(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS))
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything")
    completion = client.chat.completions.create(
        model="gpt-5.4-mini", messages=[{"role": "user", "content": "joke"}]
    )
    assert completion.choices[0].message.content == "".join(TOKENS)


def _sdk(relay, api_key: str = "anything") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{relay.url}/v1", api_key=api_key, max_retries=0)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-5"},  # not in the allow-list
        {"max_tokens": 5000},  # over the cap
        {"temperature": 3},
        {"messages": []},
    ],
)
def test_sdk_raises_bad_request_for_a_request_the_relay_refuses(upstream, relay, body):
    request = {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": "x"}], **body}
    with pytest.raises(openai.BadRequestError) as caught:
        _sdk(relay).chat.completions.create(**request, stream=True)
    assert caught.value.type == "invalid_request_error"
    assert upstream.requests == []


def test_sdk_raises_authentication_error_for_a_wrong_client_token(upstream, make_relay):
    relay = make_relay(client_tokens="sdk-client-token")
    with pytest.raises(openai.AuthenticationError):
        _sdk(relay, "wrong-token").chat.completions.create(
            model="gpt-5.4-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert upstream.requests == []


def test_sdk_raises_not_found_for_a_route_the_relay_does_not_serve(relay):
    with pytest.raises(openai.NotFoundError):
        _sdk(relay).embeddings.create(model="text-embedding-3-small", input="x")


def test_sdk_sees_a_rate_limit(upstream, relay):
    upstream.enqueue(Script(status=429, headers={"Retry-After": "2"}))
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="gpt-5.4-mini", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert caught.value.response.headers["retry-after"] == "2"


def test_sdk_sees_a_mid_stream_failure(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS, delay_s=0.01, die_after=2))
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything")
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="gpt-5.4-mini", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass


@pytest.mark.parametrize("usage", [False, True], ids=["usage-not-asked", "usage-asked"])
def test_stream_bytes_pass_through_unchanged(upstream, relay, usage):
    """Byte for byte what OpenAI sends the caller's own request. The relay always asks for usage,
    which makes OpenAI add `"usage":null` to every chunk and a usage chunk at the end: a caller
    who did not ask gets neither, one who did gets both."""
    upstream.enqueue(Script(tokens=TOKENS))
    body = {"messages": [{"role": "user", "content": "x"}], "stream": True, "seed": 7}
    if usage:
        body["stream_options"] = {"include_usage": True}
    relayed = stream(f"{relay.url}/v1/chat/completions", body)
    # OpenAI's answer to the request as the relay sent it, but asking for usage only if the
    # caller did.
    forwarded = dict(upstream.requests[0].body)
    assert forwarded.pop("stream_options") == {"include_usage": True}
    upstream.enqueue(Script(tokens=TOKENS))
    if usage:
        forwarded["stream_options"] = body["stream_options"]
    direct = stream(f"{upstream.base_url}/chat/completions", forwarded)
    assert relayed.body == direct.body
    assert (b'"usage":' in relayed.body) is usage
    assert relayed.headers["content-type"] == "text/event-stream; charset=utf-8"
    # Fields the relay does not know are passed on as they are.
    assert upstream.requests[0].body["seed"] == 7


def test_upstream_rejection_of_the_request_is_passed_on(upstream, relay):
    upstream.enqueue(Script(status=400, error_message="context_length_exceeded"))
    response = httpx.post(
        f"{relay.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "context_length_exceeded"
