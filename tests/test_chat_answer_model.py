"""The model that answered, as the upstream names it (OpenAI answers an alias such as
`gpt-5.4-mini` with a dated snapshot's name), is the one `/chat`'s `done` event and the
request log report, not the name the request asked for."""

from __future__ import annotations

from devtools.scripts import Script
from tests.helpers import SSE, stream
from tests.test_quota import request_lines

SNAPSHOT = "gpt-5.4-mini-2026-03-17"


def test_the_done_event_and_the_log_name_the_model_that_answered(upstream, relay, caplog):
    upstream.enqueue(Script(tokens=["Hi."], model=SNAPSHOT))
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).events()
    assert events[-1][0] == "done" and events[-1][1]["model"] == SNAPSHOT
    [line] = request_lines(caplog)
    assert line["model"] == SNAPSHOT
