"""The page's budget line, in a real browser against a relay with limits (moto's DynamoDB): after
token entry or sign-in it shows the caller's plan and what `GET /me` says is left, the figures go
down after an answer, and a `/me` that fails hides them without touching the chat."""

from __future__ import annotations

import time

import httpx
import pytest

from devtools.scripts import Script

TOKEN = "client-token-browser-0001"
PLANS = {
    "browser": {
        "rate_limit_per_minute": 10,
        "token_budget_per_day": 10_000,
        "max_concurrent_streams": 2,
    }
}
FULL = {"requests_this_minute": 10, "tokens_today": 10_000, "streams": 2}
ANSWER = ".turn.assistant:last-child .text"


def ask_and_wait(page, question: str) -> None:
    page.fill("#prompt", question)
    page.press("#prompt", "Enter")
    page.wait_for_selector(".turn.assistant:last-child[aria-busy=false]", timeout=10_000)


def enter_token(page, token: str) -> None:
    page.click("#settings summary")
    page.fill("#token", token)
    page.click("#settings-form button")


def shown_figures(page) -> dict[str, int]:
    """What the budget line says is left, by `/me`'s names (`10,000 tokens today` → 10000)."""
    # All in one call: the page redraws the line on each read of `/me`, and figures taken one
    # call at a time could mix two reads (a reservation's tokens beside a slot given back).
    shown = page.locator("#budget [data-left]").evaluate_all(
        "figures => figures.map(figure => [figure.dataset.left, figure.textContent])"
    )
    return {name: int(text.split()[0].replace(",", "")) for name, text in shown}


def wait_for_figures(page, until=bool, within_s: float = 10) -> dict:
    """The budget line's figures once it shows some that are `until`: the page reads `/me`
    after the event that prompts it, so the line changes a moment later."""
    deadline = time.monotonic() + within_s
    while True:  # (the page's CSP forbids wait_for_function)
        if page.is_visible("#budget"):
            figures = shown_figures(page)
            if figures and until(figures):
                return figures
        assert time.monotonic() < deadline, page.text_content("#budget")
        time.sleep(0.02)


def same_clock_minute() -> None:
    """The requests of a test and the reads of /me share one clock minute (its rate limit's)."""
    if time.time() % 60 > 50:
        time.sleep(60.5 - time.time() % 60)


@pytest.fixture
def limited_relay(make_relay, quota_table):
    return make_relay(
        allow_anonymous=False,
        client_tokens=[f"{TOKEN}:browser"],
        plans=PLANS,
        quota_table=quota_table,
        max_tokens_cap=100,
    )


def page_errors(page) -> list[str]:
    """Script errors and CSP violations; a refused `/me` (a 401 before the token is entered)
    is a failed load the browser notes, not an error of the page."""
    return [e for e in page.console_errors if "Failed to load resource" not in e]


def test_after_token_entry_the_page_shows_the_plan_and_what_is_left_which_goes_down(
    upstream, limited_relay, page
):
    same_clock_minute()
    with page.expect_response(lambda response: response.url.endswith("/me")) as before_token:
        page.goto(limited_relay.url)
    assert before_token.value.status == 401
    assert page.is_hidden("#budget")

    enter_token(page, TOKEN)
    assert wait_for_figures(page) == FULL
    assert page.text_content("#budget .plan") == "browser"
    expected = "Plan browser · left: 10 requests this minute, 10,000 tokens today, 2 streams"
    assert page.text_content("#budget") == expected

    upstream.enqueue(Script(tokens=["Hello", " there."]))
    ask_and_wait(page, "hi")
    assert page.text_content(ANSWER) == "Hello there."
    after = wait_for_figures(page, until=lambda figures: figures != FULL)
    assert after["requests_this_minute"] == 9
    assert 0 < after["tokens_today"] < 10_000
    # Once the relay has settled the answer's charge and given its stream slot back, the line
    # shows that too: the figures /me reports.
    settled = wait_for_figures(page, until=lambda figures: figures["streams"] == 2)
    me = httpx.get(f"{limited_relay.url}/me", headers={"authorization": f"Bearer {TOKEN}"})
    assert me.json()["used"]["streams_open"] == 0
    assert settled == me.json()["left"]
    assert 0 < settled["tokens_today"] < 10_000
    assert page_errors(page) == []


def test_after_sign_in_the_page_shows_the_plan_the_users_group_names(
    upstream, signin_relay, issuer, quota_table, page
):
    relay = signin_relay(jwt_plan_claim="cognito:groups", plans=PLANS, quota_table=quota_table)
    page.goto(relay.url)
    token = issuer.token("rsa-1", sub="alice", **{"cognito:groups": ["staff", "browser"]})
    page.evaluate(
        """async (token) => {
          const { setTokenGetter } = await import("/static/app.js");
          setTokenGetter(async () => token);
        }""",
        token,
    )
    assert wait_for_figures(page) == FULL
    assert page.text_content("#budget .plan") == "browser"
    assert page_errors(page) == []


def test_a_plan_without_limits_is_shown_as_such(upstream, relay, page):
    page.goto(relay.url)
    page.wait_for_selector("#budget:not([hidden])")
    assert page.text_content("#budget") == "Plan default · no limits"
    assert shown_figures(page) == {}


FETCH_ME = """async (token) => {
  const { ChatError, fetchMe } = await import("/static/chat-client.js");
  const me = await fetchMe({ getToken: async () => token });
  try {
    await fetchMe({ url: "/me", token: "not-a-client-token" });
    return { me, refused: null };
  } catch (error) {
    return { me, refused: [error instanceof ChatError, error.type, error.status] };
  }
}"""


def test_fetch_me_reads_the_caller_as_the_chat_does_and_throws_the_relays_error(
    upstream, limited_relay, page
):
    page.goto(limited_relay.url)
    result = page.evaluate(FETCH_ME, TOKEN)
    assert (result["me"]["plan"], result["me"]["left"]) == ("browser", FULL)
    assert result["refused"] == [True, "unauthorized", 401]


# How `/me` fails, injected in the browser's network (the relay's /me itself cannot fail while
# its chat works: both have the same access rule and the same DynamoDB).
FAILURES = {
    "network": lambda route: route.abort(),
    "401": lambda route: route.fulfill(
        status=401,
        content_type="application/json",
        body='{"error": {"type": "unauthorized", "message": "the token has expired"}}',
    ),
    "503": lambda route: route.fulfill(
        status=503,
        content_type="application/json",
        body='{"error": {"type": "quota_unavailable", "message": "DynamoDB did not answer"}}',
    ),
    "a relay without /me": lambda route: route.fulfill(status=404, body="Not Found"),
    "another shape": lambda route: route.fulfill(
        status=200, content_type="application/json", body='{"status": "ok"}'
    ),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failing_me_hides_the_figures_and_the_chat_goes_on(
    upstream, limited_relay, page, failure
):
    failing: list[str] = []

    def me_route(route) -> None:
        if failing:
            failing.append(route.request.url)
            FAILURES[failure](route)
        else:
            route.continue_()

    page.route("**/me", me_route)
    page.goto(limited_relay.url)
    enter_token(page, TOKEN)
    wait_for_figures(page)

    failing.append("from now on")
    upstream.enqueue(Script(tokens=["Still ", "here."]), Script(tokens=["And again."]))
    ask_and_wait(page, "first")
    assert page.text_content(ANSWER) == "Still here."
    deadline = time.monotonic() + 10
    while len(failing) < 2 or page.is_visible("#budget"):  # the read after the answer failed
        assert time.monotonic() < deadline, page.text_content("#budget")
        time.sleep(0.02)
    assert page.text_content("#budget") == ""  # no figures left over from the last good read

    ask_and_wait(page, "second")
    assert page.text_content(ANSWER) == "And again."
    assert page.locator(".turn.assistant .error").count() == 0
    assert [m["content"] for m in upstream.last.body["messages"] if m["role"] != "system"] == [
        "first",
        "Still here.",
        "second",
    ]
    assert page_errors(page) == []
