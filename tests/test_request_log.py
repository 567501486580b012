"""One structured JSON line per request, with the outcome; no prompt or completion text unless
LOG_PROMPTS=true."""

from __future__ import annotations

import json
import time

import httpx

from devtools.scripts import Script
from handler.app import create_app
from handler.settings import Settings
from tests.conftest import TEST_KEY
from tests.helpers import SSE, asgi_request, request_lines, stream
from tests.test_plans import caller_of

PROMPT = "my secret plans for the weekend"


def test_one_line_per_request_with_the_facts(upstream, relay, caplog):
    upstream.enqueue(Script(tokens=["a", "b", "c"]))
    response = stream(f"{relay.url}/chat", {"prompt": PROMPT}, SSE)
    [line] = request_lines(caplog)
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["route"] == "POST /chat"
    assert line["model"] == "gpt-5.4-mini"
    assert line["status"] == 200
    assert line["outcome"] == "ok"
    assert line["chunks"] == 3
    assert line["usage"]["completion_tokens"] == 3
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert PROMPT not in json.dumps(line)


def test_outcomes_of_failures(upstream, make_relay, caplog):
    relay = make_relay(upstream_timeout_s=0.3, ping_interval_s=0.1)
    httpx.post(f"{relay.url}/chat", json={"prompt": ""})
    upstream.enqueue(Script(status=500))
    httpx.post(f"{relay.url}/chat", json={"prompt": "x"}, headers=SSE)
    upstream.enqueue(Script(first_delay_s=2))
    stream(f"{relay.url}/chat", {"prompt": "x"}, SSE)
    upstream.enqueue(Script(tokens=["a", "b", "c"], die_after=1))
    stream(f"{relay.url}/chat", {"prompt": "x"}, SSE)
    outcomes = [(line["outcome"], line["status"]) for line in request_lines(caplog, 4)]
    assert outcomes == [
        ("rejected", 422),
        ("upstream_error", 502),
        ("upstream_timeout", 200),
        ("upstream_error", 200),
    ]


def test_prompts_and_completions_are_logged_only_when_configured(upstream, make_relay, caplog):
    relay = make_relay(log_prompts=True)
    upstream.enqueue(Script(tokens=["the ", "answer"]))
    stream(f"{relay.url}/chat", {"prompt": PROMPT}, SSE)
    [line] = request_lines(caplog)
    assert line["prompt"][-1] == {"role": "user", "content": PROMPT}
    assert line["completion"] == "the answer"


def test_an_unexpected_failure_is_a_500_with_its_request_id_and_error_type(caplog):
    app = create_app(Settings(_env_file=None, openai_api_key=TEST_KEY))

    async def broken() -> None:
        raise RuntimeError("a bug in a route")

    app.add_api_route("/broken", broken, methods=["GET"])
    response = asgi_request(app, "GET", "/broken")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"type": "internal_error", "message": "the relay failed unexpectedly"}
    }
    [line] = request_lines(caplog)
    assert line["request_id"] == response.headers["x-request-id"]
    assert (line["status"], line["outcome"], line["error_type"]) == (500, "error", "internal_error")
    assert "a bug in a route" not in response.text


def test_the_line_is_a_cloudwatch_embedded_metric_document(upstream, make_relay, caplog):
    relay = make_relay(metrics_namespace="ChatRelay/test")
    upstream.enqueue(Script(tokens=["a", "b", "c"]))
    stream(f"{relay.url}/chat", {"prompt": PROMPT}, SSE)
    [line] = request_lines(caplog)
    directives = line["_aws"]["CloudWatchMetrics"]
    assert abs(line["_aws"]["Timestamp"] / 1000 - time.time()) < 60
    assert {d["Namespace"] for d in directives} == {"ChatRelay/test"}
    # Low-cardinality dimensions only: never the caller.
    assert sorted(tuple(s) for d in directives for s in d["Dimensions"]) == [
        (),
        ("Model",),
        ("Outcome",),
    ]
    for directive in directives:
        for dimension_set in directive["Dimensions"]:
            for dimension in dimension_set:
                assert isinstance(line[dimension], str)
        for metric in directive["Metrics"]:
            assert isinstance(line[metric["Name"]], int | float), metric
            assert metric["Unit"] in {"Count", "Milliseconds"}
    by_dimension = {
        tuple(d["Dimensions"][0]): {m["Name"] for m in d["Metrics"]} for d in directives
    }
    assert by_dimension[("Model",)] == {
        "Requests",
        "FirstTokenMs",
        "PromptTokens",
        "CompletionTokens",
    }
    assert by_dimension[("Outcome",)] == {"Requests"}
    assert by_dimension[()] == {"RateLimited", "QuotaExceeded", "FirstTokenMs", "Tokens"}
    assert (line["Model"], line["Outcome"]) == (Settings().default_model, "ok")
    assert line["FirstTokenMs"] == line["ttft_ms"]
    assert line["PromptTokens"] == line["usage"]["prompt_tokens"]
    assert line["CompletionTokens"] == line["usage"]["completion_tokens"] == 3
    assert line["Tokens"] == line["usage"]["total_tokens"]
    assert (line["RateLimited"], line["QuotaExceeded"], line["TokensEstimated"]) == (0, 0, False)


def test_a_refused_request_has_metrics_without_tokens_or_first_token(relay, caplog):
    httpx.post(f"{relay.url}/chat", json={"prompt": ""})
    [line] = request_lines(caplog)
    names = {m["Name"] for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert names == {"Requests", "RateLimited", "QuotaExceeded"}
    assert (line["Model"], line["Outcome"]) == ("none", "rejected")


def test_the_line_names_the_plan_that_served_the_caller(upstream, make_relay, caplog):
    agent, other = "client-token-agent-0002", "client-token-default-0003"
    relay = make_relay(
        allow_anonymous=False,
        client_tokens=[other, f"{agent}:agents"],
        plans={"agents": {"allow_client_system_prompt": True}},
    )
    upstream.enqueue(Script(tokens=["a"]), Script(tokens=["b"]))
    for token in (agent, other, "not-a-client-token"):
        httpx.post(
            f"{relay.url}/chat", json={"prompt": "x"}, headers={"authorization": f"Bearer {token}"}
        )
    lines = {
        line["caller"]: (line["status"], line.get("plan")) for line in request_lines(caplog, 3)
    }
    assert lines == {
        caller_of(agent): (200, "agents"),
        caller_of(other): (200, "default"),
        "anonymous": (401, None),  # refused before the caller was known: no plan to name
    }
