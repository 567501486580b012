"""The relay forwards the upstream's text exactly and as it arrives, in SSE and plain text."""

from __future__ import annotations

import time

import httpx
import pytest

from devtools.scripts import Script
from tests.helpers import SSE, deltas_text, stream

TRICKY_TOKENS = [
    "Hé",
    "llo\n",
    "data: x\n\n",
    "",
    "event: done\r\n",
    " 世界 ",
    "🙂",
    '"quoted" \\ back',
    "\n\nend",
]


def test_sse_returns_the_upstream_text_exactly(upstream, relay):
    upstream.enqueue(Script(tokens=TRICKY_TOKENS))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-request-id"]
    events = response.events()
    assert deltas_text(events) == "".join(TRICKY_TOKENS)
    # One frame per non-empty upstream delta, then exactly one terminal event.
    assert [name for name, _ in events] == ["message"] * 8 + ["done"]
    done = events[-1][1]
    assert done["finish_reason"] == "stop"
    assert done["model"] == "gpt-5.4-mini"
    assert done["usage"]["completion_tokens"] == len(TRICKY_TOKENS)
    assert upstream.last.body["stream_options"] == {"include_usage": True}


def test_plain_text_returns_the_upstream_text_exactly(upstream, relay):
    upstream.enqueue(Script(tokens=TRICKY_TOKENS))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, {"accept": "*/*"})
    assert response.status == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "".join(TRICKY_TOKENS)


def test_chunks_split_mid_character_are_reassembled(upstream, relay):
    tokens = ["añ", "ü€", "🙂🙂", "ok"]
    upstream.enqueue(Script(tokens=tokens, split_writes=True))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert deltas_text(response.events()) == "".join(tokens)


@pytest.mark.parametrize("accept", ["text/event-stream", "text/plain"])
def test_tokens_arrive_while_the_upstream_is_still_sending(upstream, relay, accept):
    tokens = [f"t{i} " for i in range(10)]
    upstream.enqueue(Script(tokens=tokens, delay_s=0.05))
    sent_at = time.monotonic()
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, {"accept": accept})
    call = upstream.last
    assert call.finished_at - call.received_at >= 0.45
    first_at = sent_at + response.chunks[0][0]  # on the upstream's clock
    # The first token is with the client in the first half of the upstream's answer...
    assert first_at < call.received_at + (call.finished_at - call.received_at) / 2
    # ...and the rest arrives spread out, not in one burst at the end.
    times = [at for at, _ in response.chunks]
    assert len(times) >= 10
    assert times[-1] - times[0] >= 0.35


def test_one_upstream_connection_is_reused_across_requests(upstream, relay):
    for mode in (SSE, {"accept": "text/plain"}, SSE):
        assert stream(f"{relay.url}/chat", {"prompt": "hi"}, mode).status == 200
    assert len({r.peer for r in upstream.requests}) == 1


def test_multi_turn_messages_reach_the_upstream_after_the_system_prompt(upstream, make_relay):
    relay = make_relay(system_prompt="Be brief.")
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke"},
    ]
    body = {"messages": messages, "temperature": 0.3, "max_tokens": 50}
    assert stream(f"{relay.url}/chat", body, SSE).status == 200
    sent = upstream.last.body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, *messages]
    assert sent["temperature"] == 0.3
    assert sent["max_completion_tokens"] == 50
    assert sent["stream"] is True


def test_client_system_prompt_replaces_ours_only_when_allowed(upstream, make_relay):
    messages = [
        {"role": "system", "content": "Talk like a pirate."},
        {"role": "user", "content": "Hi"},
    ]
    strict = make_relay(system_prompt="Be brief.")
    refused = httpx.post(f"{strict.url}/chat", json={"messages": messages}, headers=SSE)
    assert refused.status_code == 422
    assert refused.json()["error"]["type"] == "invalid_request"
    assert "ALLOW_CLIENT_SYSTEM_PROMPT" in refused.json()["error"]["message"]
    assert upstream.requests == []

    lenient = make_relay(system_prompt="Be brief.", allow_client_system_prompt=True)
    stream(f"{lenient.url}/chat", {"messages": messages}, SSE)
    assert upstream.last.body["messages"] == messages


def test_model_defaults_and_allow_list(upstream, make_relay):
    relay = make_relay(default_model="gpt-5.4-mini", allowed_models="gpt-5.4-mini,gpt-4o")
    stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert upstream.last.body["model"] == "gpt-5.4-mini"
    assert upstream.last.body["max_completion_tokens"] == 1024  # the cap bounds every answer
    stream(f"{relay.url}/chat", {"prompt": "hi", "model": "gpt-4o"}, SSE)
    assert upstream.last.body["model"] == "gpt-4o"


def test_healthz_needs_no_secret_and_calls_no_upstream(upstream, make_relay):
    relay = make_relay(openai_api_key=None, openai_secret_id=None)
    response = httpx.get(f"{relay.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert upstream.requests == []
    # The same relay cannot chat: it has no credentials.
    assert httpx.post(f"{relay.url}/chat", json={"prompt": "x"}).status_code == 503


def test_healthz_answers_head_with_its_headers_and_no_body(relay):
    response = httpx.head(f"{relay.url}/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    assert response.content == b""


def test_page_is_served_at_the_root(relay):
    response = httpx.get(f"{relay.url}/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "path", ["/", "/static/index.html", "/static/app.js", "/static/chat-client.js"]
)
def test_every_file_of_the_page_carries_the_pages_security_headers(relay, path):
    """`/static/index.html` is the page itself: framed or sniffed, it is as exposed as `/`."""
    response = httpx.get(f"{relay.url}{path}")
    assert response.status_code == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
