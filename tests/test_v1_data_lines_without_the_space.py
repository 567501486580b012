"""`/v1/chat/completions` reads `data:{...}` lines as well as `data: {...}`: SSE allows both, and
some compatible servers send them without the space. The passthrough still takes out the usage
chunk a caller did not ask for, still reads the usage for the log, and a `data:[DONE]` ends the
stream as cleanly as `data: [DONE]` does."""

from __future__ import annotations

import json

from devtools.scripts import Script
from tests.helpers import request_lines, stream

MESSAGES = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def unspaced(chunk: dict) -> bytes:
    return b"data:" + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def choice(delta: dict, finish_reason: str | None = None) -> dict:
    return {"index": 0, "delta": delta, "finish_reason": finish_reason}


ANSWER = unspaced({"choices": [choice({"content": "whole"})]}) + unspaced(
    {"choices": [choice({}, "stop")]}
)
USAGE_CHUNK = unspaced({"choices": [], "usage": USAGE})
DONE = b"data:[DONE]\n\n"


def v1_stream(upstream, relay, **body: object) -> str:
    upstream.enqueue(Script(tokens=[], ending=ANSWER + USAGE_CHUNK + DONE))
    relayed = stream(
        f"{relay.url}/v1/chat/completions", {"messages": MESSAGES, "stream": True, **body}
    )
    assert relayed.status == 200
    return relayed.text


def test_unspaced_data_lines_end_cleanly_without_the_usage_chunk_nobody_asked_for(
    upstream, relay, caplog
):
    text = v1_stream(upstream, relay)
    assert text.endswith((ANSWER + DONE).decode())  # after the fake's opening chunk
    assert '"usage"' not in text and "error" not in text
    [line] = request_lines(caplog)
    assert line["outcome"] == "ok"
    assert line["usage"] == USAGE  # read from the chunk taken out


def test_unspaced_data_lines_keep_the_usage_for_a_caller_who_asked(upstream, relay, caplog):
    text = v1_stream(upstream, relay, stream_options={"include_usage": True})
    assert text.endswith((ANSWER + USAGE_CHUNK + DONE).decode())
    [line] = request_lines(caplog)
    assert line["outcome"] == "ok"
    assert line["usage"] == USAGE  # read from the stream's last lines
