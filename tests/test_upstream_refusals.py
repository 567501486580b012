"""What an upstream's refusal means, by its status: a 5xx (500 included) is the upstream failing,
which no route passes on; a 4xx other than auth and rate limits is a rejection of the request,
which /v1 passes on as OpenAI's own answer."""

from __future__ import annotations

import httpx

from devtools.scripts import Script

MESSAGES = [{"role": "user", "content": "hi"}]


def test_an_upstream_500_on_v1_is_the_relays_502_not_passed_on(upstream, relay):
    upstream.enqueue(Script(status=500, error_message="the server had an error"))
    response = httpx.post(f"{relay.url}/v1/chat/completions", json={"messages": MESSAGES})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"
    assert "the server had an error" not in response.text
