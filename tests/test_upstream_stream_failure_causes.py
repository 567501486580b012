"""The error that ends `/chat`'s stream says what went wrong with the upstream's stream: a chunk
that is not JSON, an `error` event, a stream that ended before it finished, a connection that
broke. All are `upstream_error`; the message is what tells an operator which one it was."""

from __future__ import annotations

import pytest

from devtools.scripts import Script
from tests.helpers import SSE, deltas_text, stream

HALF = {"tokens": ["half ", "an ", "answer"], "delay_s": 0.05}
CAUSES = {
    "malformed_chunk": (
        Script(**HALF, ending=b"data: {not json\n\n"),
        "the model sent a malformed chunk",
    ),
    "error_event": (Script(**HALF, error_after=2), "the model reported an error mid-stream"),
    "cut_short": (Script(**HALF, ending=b""), "the model's stream ended before it finished"),
    "connection_dropped": (Script(**HALF, die_after=2), "the model's stream broke off"),
}


@pytest.mark.parametrize("how", sorted(CAUSES))
def test_the_error_event_names_what_broke_the_upstreams_stream(upstream, relay, how):
    script, message = CAUSES[how]
    upstream.enqueue(script)
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert response.status == 200  # the first tokens went out before the break
    events = response.events()
    assert deltas_text(events).startswith("half ")
    assert events[-1] == ("error", {"error": {"type": "upstream_error", "message": message}})
