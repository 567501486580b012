"""The page keeps its bearer token in localStorage, so its CSP lets it connect only to its own
site and the one relay it is configured with (`PAGE_RELAY_URL`), on the page and every file under
/static; in a real browser, an endpoint outside that is refused before any byte is sent."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from handler.settings import Settings


def connect_src(url: str) -> str:
    csp = httpx.get(url, timeout=10).headers["content-security-policy"]
    [directive] = [d.strip() for d in csp.split(";") if d.strip().startswith("connect-src")]
    return directive


def test_by_default_the_page_connects_only_to_its_own_site(upstream, relay):
    for path in ("/", "/static/app.js", "/static/index.html"):
        assert connect_src(f"{relay.url}{path}") == "connect-src 'self'"


def test_the_configured_relay_joins_connect_src_by_its_origin(upstream, make_relay):
    relay = make_relay(page_relay_url="https://relay.example.com:8443/chat")
    for path in ("/", "/static/chat-client.js"):
        expected = "connect-src 'self' https://relay.example.com:8443"
        assert connect_src(f"{relay.url}{path}") == expected


@pytest.mark.parametrize(
    "url",
    ["http://relay.example.com/chat", "https://relay.example.com:x/", "https://a;b.example.com/"],
)
def test_a_relay_url_that_would_weaken_the_policy_stops_the_relay_at_start(url):
    with pytest.raises(ValidationError):
        Settings(_env_file=None, page_relay_url=url)


def test_the_page_cannot_send_its_token_to_an_endpoint_it_is_not_configured_with(
    upstream, make_relay, page
):
    elsewhere = make_relay(cors_origins="*")  # would answer, if the browser let the page ask
    relay = make_relay()
    page.goto(relay.url)
    page.evaluate(
        "([url]) => { localStorage.setItem('relay.endpoint', url);"
        " localStorage.setItem('relay.token', 'page-token-secret'); }",
        [f"{elsewhere.url}/chat"],
    )
    page.reload()
    page.fill("#prompt", "hello")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".turn.assistant:last-child[aria-busy=false]", timeout=10_000)
    error = page.text_content(".turn.assistant:last-child .error")
    assert "network_error" in error, error
    assert upstream.requests == []  # the other relay never got the request (nor the token)
    assert any("Content Security Policy" in e for e in page.console_errors), page.console_errors
