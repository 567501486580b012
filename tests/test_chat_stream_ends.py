"""How `/chat` reads the framing of an upstream's stream beyond the fake OpenAI's own: SSE
comments (the keep-alives some compatible servers and routers send) and blank lines between
events are passed over, and a `[DONE]` the upstream did not close with a blank line still
ends the answer as complete."""

from __future__ import annotations

import json

from devtools.scripts import Script
from tests.helpers import SSE, deltas_text, stream

FINISH = (
    b"data: "
    + json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).encode()
    + b"\n\n"
)


def chat_events(upstream, relay, tokens: list[str], ending: bytes) -> list:
    upstream.enqueue(Script(tokens=tokens, ending=ending))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert response.status == 200
    return response.events()


def test_comments_and_blank_lines_in_the_upstreams_stream_are_passed_over(upstream, relay):
    ending = b": PROCESSING\n\n\n\n: still there\n\n" + FINISH + b"data: [DONE]\n\n"
    events = chat_events(upstream, relay, ["whole ", "answer"], ending)
    assert deltas_text(events) == "whole answer"
    assert events[-1][0] == "done" and events[-1][1]["finish_reason"] == "stop"


def test_a_done_without_its_blank_line_still_completes_the_answer(upstream, relay):
    """No `finish_reason` either: only the `[DONE]` says the answer is whole."""
    events = chat_events(upstream, relay, ["whole ", "answer"], b"data: [DONE]\n")
    assert deltas_text(events) == "whole answer"
    assert [name for name, _ in events if name in ("done", "error")] == ["done"]


def test_data_lines_without_the_space_stream_through_chat(upstream, relay):
    """SSE allows `data:{...}` as well as `data: {...}`; some compatible servers send it."""
    delta = {"choices": [{"index": 0, "delta": {"content": "whole"}, "finish_reason": None}]}
    ending = (
        b"data:" + json.dumps(delta).encode() + b"\n\n" + FINISH.replace(b"data: ", b"data:")
    ) + b"data:[DONE]\n\n"
    events = chat_events(upstream, relay, [], ending)
    assert deltas_text(events) == "whole"
    assert events[-1][0] == "done" and events[-1][1]["finish_reason"] == "stop"
