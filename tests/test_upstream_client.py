"""How the relay calls the upstream: the proxy the environment names, and the request it sends."""

from __future__ import annotations

import socket

import httpx

from devtools.scripts import Script
from tests.helpers import SSE, deltas_text, stream

# A name that cannot resolve (RFC 2606): only a proxy can get a request there.
UNREACHABLE_BASE = "http://model.example.invalid/v1"


def _proxy_env(monkeypatch, proxy: str) -> None:
    """HTTP_PROXY set to `proxy`, every other proxy variable cleared; the test's own calls to the
    relay (127.0.0.1) go direct."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_upstream_is_reached_through_the_environment_proxy(upstream, make_relay, monkeypatch):
    # The fake upstream answers absolute-form requests too, so it can stand in for the proxy.
    _proxy_env(monkeypatch, upstream.base_url.removesuffix("/v1"))
    relay = make_relay(openai_base_url=UNREACHABLE_BASE)
    upstream.enqueue(Script(tokens=["via ", "proxy"]))
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).events()
    assert deltas_text(events) == "via proxy"
    assert upstream.last.path == f"{UNREACHABLE_BASE}/chat/completions"


def test_proxy_credentials_become_a_proxy_authorization_header(upstream, make_relay, monkeypatch):
    address = upstream.base_url.removesuffix("/v1").removeprefix("http://")
    _proxy_env(monkeypatch, f"http://relay%40corp:s%3Acret@{address}")
    relay = make_relay(openai_base_url=UNREACHABLE_BASE)
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).events()
    assert events[-1][0] == "done"
    assert upstream.last.headers["proxy-authorization"] == "Basic cmVsYXlAY29ycDpzOmNyZXQ="
    assert upstream.last.path == f"{UNREACHABLE_BASE}/chat/completions"


def test_no_proxy_sends_the_upstream_request_directly(upstream, make_relay, monkeypatch):
    _proxy_env(monkeypatch, _closed_port())  # a proxy that would refuse the connection
    relay = make_relay()
    upstream.enqueue(Script(tokens=["direct"]))
    events = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE).events()
    assert deltas_text(events) == "direct"
    assert upstream.last.path == "/v1/chat/completions"


def test_a_broken_proxy_is_an_upstream_error(make_relay, monkeypatch):
    _proxy_env(monkeypatch, _closed_port())
    relay = make_relay(openai_base_url=UNREACHABLE_BASE)
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"


def test_the_upstream_request_asks_for_uncompressed_json(upstream, relay):
    # Compressed, a token would wait in a decompressor, and /v1 could not pass bytes through.
    httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    headers = upstream.last.headers
    assert headers["accept-encoding"] == "identity"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("streaming-chat-relay ")
    assert upstream.last.body["stream"] is True


def test_cookies_the_upstream_sets_are_not_sent_back(upstream, make_relay, monkeypatch):
    # One connection pool serves every caller of the relay: no cookie jar may connect them.
    # (Through the proxy the upstream has a host name: cookie jars ignore bare IP addresses.)
    _proxy_env(monkeypatch, upstream.base_url.removesuffix("/v1"))
    relay = make_relay(openai_base_url=UNREACHABLE_BASE)
    upstream.enqueue(Script(status=429, headers={"Set-Cookie": "__cf_bm=caller-one; Path=/"}))
    assert httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}).status_code == 429
    assert httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}).status_code == 200
    assert "cookie" not in upstream.last.headers
