"""No first token within UPSTREAM_TIMEOUT_S is the contract's 504, before any header, even when
the upstream keeps its connection busy meanwhile (empty deltas, so its read timeout never fires
and only the relay's own first-frame wait can end it): the wait that lasts the whole timeout
ends in the error status, not in a 200 stream that fails later (handler/streaming.py)."""

from __future__ import annotations

import httpx
import pytest

from devtools.scripts import Script
from tests.helpers import SSE

TIMEOUT_S = 0.5


@pytest.mark.parametrize(
    ("headers", "ping_interval_s"),
    [(SSE, 5.0), (SSE, TIMEOUT_S), ({}, 0.1)],
    ids=["sse-ping-after-the-timeout", "sse-ping-at-the-timeout", "plain-text"],
)
def test_no_first_token_within_the_timeout_is_a_504_though_the_upstream_sends_empty_deltas(
    upstream, make_relay, headers, ping_interval_s
):
    relay = make_relay(upstream_timeout_s=TIMEOUT_S, ping_interval_s=ping_interval_s)
    upstream.enqueue(Script(tokens=[""] * 60 + ["late"], delay_s=0.05))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=headers, timeout=15)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    assert upstream.last.hung_up.wait(10)
