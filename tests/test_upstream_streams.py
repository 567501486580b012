"""How the relay reads an upstream's stream, whatever its framing and however it ends: CRLF-framed
SSE is read like LF-framed on every streamed route, and a stream cut short, a malformed chunk
or an `error` event mid-stream ends the caller's stream with the contract's error, never a
silent success. Plus the upstream statuses the other tests leave out (429 without
`Retry-After`, 403)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from devtools.scripts import Script
from tests.helpers import SSE, deltas_text, stream

TOKENS = ["Carriage ", "returns\r\n", "are ", "text ", "too ✨"]
MESSAGES = [{"role": "user", "content": "hi"}]


def ui_stream_parts(text: str) -> list:
    """The `data:` payloads of an AI SDK UI message stream, `[DONE]` as the string."""
    payloads = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


# CRLF framing: the SSE spec allows CR LF, LF or CR as line ends, and OpenAI-compatible servers
# behind some proxies send CR LF. Each route must read it like LF.


@pytest.mark.parametrize("split_writes", [False, True])
def test_crlf_framed_upstream_streams_through_chat(upstream, relay, split_writes):
    upstream.enqueue(Script(tokens=TOKENS, crlf=True, split_writes=split_writes))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert response.status == 200
    events = response.events()
    assert deltas_text(events) == "".join(TOKENS)
    name, done = events[-1]
    assert name == "done"
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == len(TOKENS)


def test_crlf_framed_upstream_streams_through_chat_as_plain_text(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS, crlf=True))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"})
    assert response.status == 200
    assert response.text == "".join(TOKENS)


def test_crlf_framed_upstream_streams_through_api_chat(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS, crlf=True))
    ui = {"messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    response = stream(f"{relay.url}/api/chat", ui)
    assert response.status == 200
    parts = ui_stream_parts(response.text)
    text = "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta")
    assert text == "".join(TOKENS)
    assert parts[-2]["type"] == "finish" and parts[-2]["finishReason"] == "stop"
    assert parts[-1] == "[DONE]"


@pytest.mark.parametrize("include_usage", [False, True])
def test_crlf_framed_upstream_streams_through_v1_chat_completions(upstream, relay, include_usage):
    upstream.enqueue(Script(tokens=TOKENS, crlf=True))
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything")
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client.chat.completions.create(
            model="gpt-5.4-mini", messages=MESSAGES, stream=True, **extra
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(TOKENS)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    # The relay always asks for usage; the caller who did not gets no usage chunk.
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert [c.usage.completion_tokens for c in usage_chunks] == [len(TOKENS)]
    else:
        assert usage_chunks == []


def test_crlf_framed_upstream_streams_through_v1_responses(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS, crlf=True))
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything")
    events = list(client.responses.create(model="gpt-5.4-mini", input="hi", stream=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "".join(TOKENS)
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens == len(TOKENS)


# Streams that do not end as the protocol says. Each must end with an error, not look complete.

# The tokens come apart, so the first goes out (with a 200) before the break arrives.
HALF = {"tokens": ["half ", "an ", "answer"], "delay_s": 0.05}
CUT_SHORT = Script(**HALF, ending=b"")
MALFORMED = Script(**HALF, ending=b"data: {not json\n\n")
ERROR_EVENT = Script(**HALF, error_after=2)
BROKEN = {"cut_short": CUT_SHORT, "malformed_chunk": MALFORMED, "error_event": ERROR_EVENT}


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_broken_upstream_stream_ends_chat_with_an_error_event(upstream, relay, how):
    upstream.enqueue(BROKEN[how])
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert response.status == 200  # the first tokens went out before the break
    events = response.events()
    assert deltas_text(events).startswith("half ")
    assert [name for name, _ in events if name in ("done", "error")] == ["error"]
    name, error = events[-1]
    assert name == "error"
    assert error["error"]["type"] == "upstream_error"
    assert set(error["error"]) == {"type", "message"}  # /chat's shape, not OpenAI's


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_broken_upstream_stream_aborts_the_plain_text_transfer(upstream, relay, how):
    upstream.enqueue(BROKEN[how])
    with pytest.raises(httpx.RemoteProtocolError):
        stream(f"{relay.url}/chat", {"prompt": "hi"})


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_broken_upstream_stream_ends_api_chat_with_an_error_part(upstream, relay, how):
    upstream.enqueue(BROKEN[how])
    ui = {"messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    response = stream(f"{relay.url}/api/chat", ui)
    assert response.status == 200
    parts = ui_stream_parts(response.text)
    assert not any(isinstance(p, dict) and p["type"] == "finish" for p in parts)
    assert parts[-2]["type"] == "error"
    assert json.loads(parts[-2]["errorText"])["error"]["type"] == "upstream_error"
    assert parts[-1] == "[DONE]"


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_broken_upstream_stream_ends_v1_with_an_error_chunk_not_done(upstream, relay, how):
    """`/v1` forwards the upstream's bytes as they are (a malformed chunk too), then ends the
    stream with OpenAI's error chunk instead of `[DONE]`."""
    upstream.enqueue(BROKEN[how])
    body = {"model": "gpt-5.4-mini", "messages": MESSAGES, "stream": True}
    response = stream(f"{relay.url}/v1/chat/completions", body)
    assert response.status == 200
    payloads = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert "[DONE]" not in payloads
    error = json.loads(payloads[-1])["error"]
    assert error["type"] == "upstream_error"
    assert set(error) == {"message", "type", "param", "code"}  # OpenAI's shape, which SDKs read
    assert '"half "' in response.text


@pytest.mark.parametrize("how", ["cut_short", "error_event"])
def test_a_broken_upstream_stream_raises_in_the_openai_sdk_on_v1(upstream, relay, how):
    upstream.enqueue(BROKEN[how])
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything", max_retries=0)
    pieces: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
            model="gpt-5.4-mini", messages=MESSAGES, stream=True
        ):
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces).startswith("half ")


def chunk_event(delta: dict, finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return b"data: " + json.dumps({"model": "gpt-5.4-mini", "choices": [choice]}).encode() + b"\n\n"


@pytest.mark.parametrize("count", [1, 2, 3])
def test_deltas_that_arrive_in_one_read_are_each_forwarded(upstream, relay, count):
    """However many chunks one socket read brings, each delta becomes its own frame."""
    texts = [f"part{i} " for i in range(count)]
    together = b"".join(chunk_event({"content": t}) for t in texts)
    ending = together + chunk_event({}, "stop") + b"data: [DONE]\n\n"
    upstream.enqueue(Script(tokens=[], ending=ending))
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).events()
    assert [data for name, data in events if name == "message"] == [{"delta": t} for t in texts]
    assert events[-1][0] == "done"


def test_an_upstream_stream_ending_with_finish_reason_but_no_done_is_complete_on_chat(
    upstream, relay
):
    """`/chat` parses the chunks: a `finish_reason` says the answer is whole even if the
    upstream left out `[DONE]` (as some OpenAI-compatible servers do)."""
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    ending = b"data: " + json.dumps(finish).encode() + b"\n\n"
    upstream.enqueue(Script(tokens=["whole"], ending=ending))
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).events()
    assert events[-1][0] == "done" and events[-1][1]["finish_reason"] == "length"


# Upstream statuses the rest of the suite leaves out.


def test_rate_limit_without_retry_after_is_a_429_without_one(upstream, relay):
    upstream.enqueue(Script(status=429))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=SSE)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "upstream_rate_limited"
    assert "retry-after" not in response.headers


def test_rate_limit_without_retry_after_on_v1_is_openais_429(upstream, relay):
    upstream.enqueue(Script(status=429))
    response = httpx.post(
        f"{relay.url}/v1/chat/completions",
        json={"model": "gpt-5.4-mini", "messages": MESSAGES, "stream": True},
    )
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "upstream_rate_limited"
    assert "retry-after" not in response.headers


V1_BODY = {"model": "gpt-5.4-mini", "messages": MESSAGES, "stream": True}


@pytest.mark.parametrize(
    ("path", "body"), [("/chat", {"prompt": "hi"}), ("/v1/chat/completions", V1_BODY)]
)
def test_upstream_403_is_upstream_auth_and_not_retried(upstream, relay, path, body, caplog):
    upstream.enqueue(Script(status=403, error_message="Project does not have access"))
    response = httpx.post(f"{relay.url}{path}", json=body, headers=SSE)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_auth"
    assert "Project does not have access" not in response.text  # the upstream's words stay out
    assert len([r for r in upstream.requests if r.method == "POST"]) == 1
    assert any("HTTP 403" in r.getMessage() for r in caplog.records)
