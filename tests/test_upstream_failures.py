"""Upstream failures become the contract's errors: before the stream as HTTP statuses, after
its first byte as the terminal `event: error` (SSE) or an aborted transfer (plain text)."""

from __future__ import annotations

import time

import httpx
import pytest

from devtools.scripts import Script
from tests.helpers import (
    SSE,
    deltas_text,
    endpoint_that_never_accepts,
    just_past_a_whole_second,
    request_lines,
    stream,
)


def test_rate_limit_passes_retry_after_on(upstream, relay):
    upstream.enqueue(Script(status=429, headers={"Retry-After": "7"}))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=SSE)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "upstream_rate_limited"


@pytest.mark.parametrize("status", [500, 503])
def test_upstream_server_error_is_a_502(upstream, relay, status):
    upstream.enqueue(Script(status=status))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=SSE)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"
    assert len(upstream.requests) == 1  # no silent retries: the caller decides


def test_a_connection_that_never_completes_fails_when_its_time_is_up_not_a_second_later(
    make_relay,
):
    """The upstream connection's wait is bounded by UPSTREAM_TIMEOUT_S (up to 10 s) to the
    second it says: aiohttp rounds a connect timeout over 5 s up to the next whole second
    of the event loop's clock unless told not to, and the request is sent just past a whole
    second of it. A connection that runs out of time is the contract's 504."""
    with endpoint_that_never_accepts() as url:
        relay = make_relay(openai_base_url=f"{url}/v1", upstream_timeout_s=6)
        sent = just_past_a_whole_second()
        response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, timeout=15)
        waited = time.monotonic() - sent
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    # Rounded up, the wait would have ended about 0.95 s after its 6 s.
    assert 5.95 < waited < 6.7, waited


def test_unreachable_upstream_is_a_502(make_relay):
    relay = make_relay(openai_base_url="http://127.0.0.1:9/v1")
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"


def test_unresolvable_upstream_host_logs_the_cause(make_relay, caplog):
    relay = make_relay(openai_base_url="http://relay-test.invalid/v1")
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "could not reach the model"
    causes = [r.getMessage() for r in caplog.records if "cause:" in r.getMessage()]
    # Once, with the exception's class (aiohttp's DNS failure) and the host it could not find.
    assert len(causes) == 1, causes
    assert "ClientConnectorDNSError" in causes[0]
    assert "relay-test.invalid" in causes[0]


def test_no_first_token_in_time_before_headers_is_a_504(upstream, make_relay):
    relay = make_relay(upstream_timeout_s=0.5, ping_interval_s=5)
    upstream.enqueue(Script(first_delay_s=30))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=SSE)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    assert upstream.last.first_token_at is None  # given up on before the token came


def test_plain_text_timeout_is_a_504(upstream, make_relay):
    relay = make_relay(upstream_timeout_s=0.5, ping_interval_s=0.1)
    upstream.enqueue(Script(first_delay_s=3))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"


def test_pings_while_waiting_then_timeout_event(upstream, make_relay):
    relay = make_relay(upstream_timeout_s=1.0, ping_interval_s=0.2)
    upstream.enqueue(Script(first_delay_s=5))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert response.status == 200
    events = response.events()
    pings = [e for e in events if e == ("comment", "ping")]
    assert 3 <= len(pings) <= 5
    assert events[-1] == (
        "error",
        {"error": {"type": "upstream_timeout", "message": "the model sent no token within 1 s"}},
    )
    assert upstream.last.hung_up.wait(10)  # and the upstream request was given up


def test_pings_never_come_faster_than_their_interval(upstream, make_relay):
    # uvloop rounds a timer to whole milliseconds, so a 0.4 ms wait ends at once: the pings must
    # follow the clock, not the wakeups, or they come as fast as the event loop can turn.
    relay = make_relay(upstream_timeout_s=0.2, ping_interval_s=0.0004)
    upstream.enqueue(Script(first_delay_s=2))
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).events()
    pings = [e for e in events if e == ("comment", "ping")]
    assert 1 <= len(pings) <= 0.2 / 0.0004
    assert events[-1][0] == "error"


def test_pings_then_tokens(upstream, make_relay):
    relay = make_relay(upstream_timeout_s=5, ping_interval_s=0.2)
    upstream.enqueue(Script(tokens=["late ", "answer"], first_delay_s=0.7))
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).events()
    assert events[0] == ("comment", "ping")
    assert deltas_text(events) == "late answer"
    assert events[-1][0] == "done"


def test_upstream_dying_mid_stream_ends_sse_with_an_error_event(upstream, relay):
    upstream.enqueue(Script(tokens=["a", "b", "c", "d", "e"], delay_s=0.02, die_after=3))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    events = response.events()
    assert deltas_text(events) == "abc"
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "upstream_error"
    assert [name for name, _ in events].count("done") == 0


def test_upstream_dying_mid_stream_aborts_plain_text(upstream, relay):
    upstream.enqueue(Script(tokens=["a", "b", "c", "d", "e"], delay_s=0.02, die_after=3))
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{relay.url}/chat", json={"prompt": "hi"}) as response,
    ):
        for piece in response.iter_raw():
            received += piece
    assert received == b"abc"


def test_upstream_dying_mid_stream_on_passthrough_sends_an_openai_error(upstream, relay):
    upstream.enqueue(Script(tokens=["a", "b", "c"], delay_s=0.02, die_after=2))
    body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
    response = stream(f"{relay.url}/v1/chat/completions", body)
    assert response.status == 200
    assert response.text.rstrip().endswith('"type":"upstream_error","param":null,"code":null}}')
    assert "[DONE]" not in response.text


def test_client_disconnect_closes_the_upstream_quickly(upstream, relay, caplog):
    upstream.enqueue(Script(tokens=[f"t{i} " for i in range(400)], delay_s=0.05))
    with httpx.stream("POST", f"{relay.url}/chat", json={"prompt": "hi"}, headers=SSE) as r:
        for seen, _ in enumerate(r.iter_raw(), start=1):
            if seen == 3:
                # Before the break: the abandoned `iter_raw` generator closes the connection
                # as it is dropped, and the relay may hang up before the next line runs.
                left_at = time.monotonic()
                break
    # Closed once the caller left, long before the upstream's 20 s answer would have ended.
    assert upstream.last.hung_up.wait(10)
    assert upstream.last.hung_up_at > left_at
    assert upstream.last.tokens_sent < 200 and upstream.last.finished_at is None
    assert request_lines(caplog)[-1]["outcome"] == "client_disconnected"
