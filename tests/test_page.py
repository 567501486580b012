"""The chat page at GET /, in a real browser against the relay and the fake upstream: tokens
render as they stream, exactly, as text; history, Stop, errors and settings work."""

from __future__ import annotations

import time

import pytest

from devtools.scripts import Script
from handler.access import safety_identifier
from tests.browser import ARTIFACTS
from tests.conftest import TEST_KEY

ANSWER = ".turn.assistant:last-child .text"


def ask(page, question: str) -> None:
    page.fill("#prompt", question)
    page.press("#prompt", "Enter")


def wait_until_answered(page, timeout_ms: int = 10_000) -> None:
    page.wait_for_selector(".turn.assistant:last-child[aria-busy=false]", timeout=timeout_ms)


def test_answer_grows_while_the_upstream_is_still_sending(upstream, relay, page):
    tokens = [f"word{i} " for i in range(12)]
    upstream.enqueue(Script(tokens=tokens, delay_s=0.08))
    page.goto(relay.url)
    ask(page, "Tell me something")
    samples = []
    page.wait_for_selector(ANSWER)
    for _ in range(30):
        samples.append((time.monotonic(), page.text_content(ANSWER)))
        time.sleep(0.03)
    wait_until_answered(page)
    finished_at = upstream.last.finished_at
    during = [text for at, text in samples if at < finished_at and text]
    assert len(set(during)) >= 4, samples  # several different partial answers, before the end
    lengths = [len(text) for _, text in samples]
    assert lengths == sorted(lengths)  # it only ever grows
    assert page.text_content(ANSWER) == "".join(tokens)
    metrics = page.text_content(".turn.assistant:last-child .metrics")
    assert "first token" in metrics and "tokens/s" in metrics


def test_final_text_is_exactly_the_upstreams(upstream, relay, page):
    tokens = ["Hé", "llo\n", "wörld ", "✨", "\n\n  indented ", "日本語", " <b>not bold</b>"]
    upstream.enqueue(Script(tokens=tokens, delay_s=0.01))
    page.goto(relay.url)
    ask(page, "Say hello")
    wait_until_answered(page)
    assert page.text_content(ANSWER) == "".join(tokens)
    assert page.locator(".turn.assistant b").count() == 0
    assert (
        page.evaluate(
            "getComputedStyle(document.querySelector('.turn.assistant .text')).whiteSpace"
        )
        == "pre-wrap"
    )


def test_html_in_the_answer_is_shown_as_text(upstream, relay, page):
    payload = "<img src=x onerror=\"document.title='pwned'\">"
    upstream.enqueue(Script(tokens=[payload[:10], payload[10:]]))
    page.goto(relay.url)
    ask(page, "x")
    wait_until_answered(page)
    assert page.text_content(ANSWER) == payload
    assert page.locator("main img").count() == 0
    assert page.title() != "pwned"


def test_second_turn_sends_the_history(upstream, relay, page):
    upstream.enqueue(Script(tokens=["Paris", "."]), Script(tokens=["About 2 million."]))
    page.goto(relay.url)
    ask(page, "Capital of France?")
    wait_until_answered(page)
    ask(page, "How many people live there?")
    page.wait_for_selector(".turn.assistant:nth-child(4)[aria-busy=false]")
    messages = upstream.last.body["messages"]
    assert [m for m in messages if m["role"] != "system"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "How many people live there?"},
    ]


def test_shift_enter_adds_a_line_and_enter_sends(upstream, relay, page):
    page.goto(relay.url)
    page.fill("#prompt", "line one")
    page.press("#prompt", "Shift+Enter")
    page.keyboard.type("line two")
    assert page.input_value("#prompt") == "line one\nline two"
    assert upstream.requests == []
    page.press("#prompt", "Enter")
    wait_until_answered(page)
    assert upstream.last.body["messages"][-1]["content"] == "line one\nline two"


def test_stop_ends_the_stream_and_the_upstream_sees_the_hang_up(upstream, relay, page):
    upstream.enqueue(Script(tokens=[f"t{i} " for i in range(200)], delay_s=0.05))
    page.goto(relay.url)
    ask(page, "Talk for a long time")
    deadline = time.monotonic() + 5
    while len(page.text_content(ANSWER) or "") <= 10:  # (the CSP forbids wait_for_function)
        assert time.monotonic() < deadline
        time.sleep(0.02)
    page.click("#stop")
    wait_until_answered(page)
    assert upstream.last.hung_up.wait(2)
    assert upstream.last.tokens_sent < 100
    assert page.text_content(".turn.assistant:last-child .error") == "Stopped."
    assert page.is_enabled("#send") and page.is_disabled("#stop")


def test_upstream_rate_limit_is_shown_with_its_type(upstream, relay, page):
    upstream.enqueue(Script(status=429, headers={"Retry-After": "5"}))
    page.goto(relay.url)
    ask(page, "hi")
    wait_until_answered(page)
    error = page.text_content(".turn.assistant:last-child .error")
    assert error.startswith("Error (upstream_rate_limited):")


def test_a_failure_mid_stream_is_shown(upstream, relay, page):
    upstream.enqueue(Script(tokens=list("abcdef"), delay_s=0.02, die_after=3))
    page.goto(relay.url)
    ask(page, "hi")
    wait_until_answered(page)
    assert page.text_content(ANSWER) == "abc"
    assert "upstream_error" in page.text_content(".turn.assistant:last-child .error")


def test_settings_keep_a_token_and_another_endpoint(upstream, make_relay, page):
    guarded = make_relay(client_tokens="page-token-123", cors_origins="*", allow_anonymous=False)
    relay = make_relay(page_relay_url=guarded.url)  # the page's CSP lets it call that relay
    page.goto(relay.url)
    page.click("#settings summary")
    page.fill("#endpoint", f"{guarded.url}/chat")
    page.click("#settings-form button")
    ask(page, "without a token")
    wait_until_answered(page)
    assert "Error (unauthorized)" in page.text_content(".turn.assistant:last-child .error")

    page.fill("#token", "page-token-123")
    page.click("#settings-form button")
    page.reload()  # kept in localStorage
    assert page.input_value("#token") == "page-token-123"
    ask(page, "with a token")
    wait_until_answered(page)
    assert page.locator(".turn.assistant:last-child .error").count() == 0
    assert upstream.last.body["messages"][-1]["content"] == "with a token"


def test_page_is_accessible_and_served_under_a_strict_csp(upstream, relay, page):
    response = page.goto(relay.url)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert page.get_attribute("#conversation", "aria-label") == "Conversation"
    assert page.locator("label[for=prompt]").count() == 1
    assert page.locator("label[for=endpoint]").count() == 1
    assert page.locator("label[for=token]").count() == 1
    upstream.enqueue(Script(tokens=["Accessible ", "answer."]))
    page.focus("#prompt")
    page.keyboard.type("keyboard only")
    page.keyboard.press("Enter")
    wait_until_answered(page)
    assert page.get_attribute(ANSWER, "aria-live") == "polite"
    page.set_viewport_size({"width": 375, "height": 700})  # a phone
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-page.png"), full_page=True)
    assert page.console_errors == []  # no CSP violation, no script error


# A stand-in for an OIDC library: its current token is whatever the test last gave it, and a
# session that has ended makes it throw. (The page also asks it before each read of /me.)
SIGN_IN = """async () => {
  const { setTokenGetter } = await import("/static/app.js");
  setTokenGetter(async () => {
    if (globalThis.currentToken === "fail") throw new Error("the session has ended");
    return globalThis.currentToken;
  });
}"""
REFRESH = "(token) => { globalThis.currentToken = token; }"


def test_a_token_getter_signs_each_request_with_the_current_token(
    upstream, make_relay, issuer, page
):
    """Any OIDC library plugs in: the page asks the getter before every request, so a token
    the library refreshed between two questions is the one the relay sees."""
    relay = make_relay(allow_anonymous=False, jwt_issuer=issuer.issuer, jwt_audience="relay-app")
    page.goto(relay.url)
    ask(page, "before signing in")
    wait_until_answered(page)
    assert "Error (unauthorized)" in page.text_content(".turn.assistant:last-child .error")

    page.evaluate(REFRESH, issuer.token("rsa-1", sub="alice"))
    page.evaluate(SIGN_IN)
    for question, token in (
        ("first", None),
        ("second", issuer.token("ec-1", sub="alice-again")),  # the library refreshed it
    ):
        if token:
            page.evaluate(REFRESH, token)
        ask(page, question)
        wait_until_answered(page)
        assert page.locator(".turn.assistant:last-child .error").count() == 0
    assert [r.body["safety_identifier"] for r in upstream.requests] == [
        safety_identifier(TEST_KEY, "jwt:alice"),
        safety_identifier(TEST_KEY, "jwt:alice-again"),
    ]
    page.evaluate(REFRESH, "fail")
    ask(page, "after the session ended")
    wait_until_answered(page)
    error = page.text_content(".turn.assistant:last-child .error")
    assert (
        error == "Error (token_unavailable): could not get an access token: the session has ended"
    )
    assert len(upstream.requests) == 2


@pytest.fixture(autouse=True)
def _no_page_errors(page):
    yield
    assert [e for e in page.console_errors if "Failed to load resource" not in e] == []
