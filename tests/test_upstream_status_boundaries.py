"""Where an upstream's refusal stops being the caller's mistake: every 4xx up to 499 (other than
auth and rate limits) is a rejection that /v1 passes on as it came, and 500 upward is the
upstream failing, the relay's 502 (tests/test_upstream_refusals.py has the 500)."""

from __future__ import annotations

import httpx

from devtools.loopback import ServerThread
from tests.test_upstream_refusals import FixedAnswer

MESSAGES = [{"role": "user", "content": "hi"}]
BODY = b'{"error": {"message": "client closed the request", "type": "invalid_request_error"}}'


def test_an_upstream_499_the_last_4xx_is_a_rejection_passed_on(make_relay):
    thread = ServerThread(FixedAnswer(499, BODY)).start()
    try:
        relay = make_relay(openai_base_url=f"http://127.0.0.1:{thread.server.port}/v1")
        v1 = httpx.post(f"{relay.url}/v1/chat/completions", json={"messages": MESSAGES})
        assert (v1.status_code, v1.content) == (499, BODY)
        chat = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
        assert chat.status_code == 502
        assert "rejected the request (HTTP 499)" in chat.json()["error"]["message"]
    finally:
        thread.stop()
