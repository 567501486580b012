"""One request followed from the caller to the upstream: OpenAI's `x-request-id` of its answer is
in the request's log line and, on /chat, in a 5xx error body as `upstream_request_id`; a model
the upstream no longer serves is an outcome of its own (`model_unavailable`), not the caller's
mistake; and Azure OpenAI's v1 API (its base URL, its `api-key` header) is an upstream."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from devtools.openai_server import AzureOpenAIServer
from devtools.scripts import Script
from tests.conftest import TEST_KEY
from tests.helpers import SSE, deltas_text, stream

RETIRED = {
    "status": 404,
    "error_code": "model_not_found",
    "error_message": "The model `gpt-5.4-mini` has been deprecated.",
}


def request_lines(caplog) -> list[dict]:
    time.sleep(0.05)  # the line is written when the response has fully ended
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "relay.request"]


def test_the_log_line_carries_the_upstreams_request_id(upstream, relay, caplog):
    upstream.enqueue(Script(tokens=["a", "b"]))
    stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    [line] = request_lines(caplog)
    assert line["upstream_request_id"] == upstream.last.request_id
    assert line["upstream_request_id"].startswith("req_")
    assert line["request_id"] != line["upstream_request_id"]  # the relay's own id stays


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/responses"])
def test_the_v1_routes_log_the_upstreams_request_id_too(upstream, relay, caplog, route):
    body = (
        {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        if route.endswith("completions")
        else {"model": "gpt-5.4-mini", "input": "hi", "stream": True}
    )
    with httpx.stream("POST", relay.url + route, json=body) as response:
        response.read()
    [line] = request_lines(caplog)
    assert line["upstream_request_id"] == upstream.last.request_id


@pytest.mark.parametrize(("status", "relay_status"), [(500, 502), (503, 502)])
def test_a_5xx_on_chat_names_the_upstreams_request_id(
    upstream, relay, caplog, status, relay_status
):
    upstream.enqueue(Script(status=status))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == relay_status
    error = response.json()["error"]
    assert error["upstream_request_id"] == upstream.last.request_id
    [line] = request_lines(caplog)
    assert line["upstream_request_id"] == upstream.last.request_id
    assert line["outcome"] == "upstream_error"


def test_a_refused_key_names_the_upstreams_request_id(upstream, relay):
    upstream.accepted_keys = {"sk-some-other-key-0000000000"}
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_auth"
    assert error["upstream_request_id"] == upstream.last.request_id


def test_a_4xx_body_has_no_upstream_request_id(upstream, relay):
    """The caller's own mistakes are the caller's to fix: nothing to ask OpenAI about."""
    upstream.enqueue(Script(status=429))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 429
    assert "upstream_request_id" not in response.json()["error"]


def test_a_retired_model_on_chat_is_model_unavailable(upstream, relay, caplog):
    upstream.enqueue(Script(**RETIRED))
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "model_unavailable"
    assert error["upstream_request_id"] == upstream.last.request_id
    [line] = request_lines(caplog)
    assert (line["outcome"], line["error_type"]) == ("model_unavailable", "model_unavailable")
    assert line["Outcome"] == "model_unavailable"  # the metric the alarm watches


def test_a_retired_model_on_v1_is_passed_on_and_counted_as_model_unavailable(
    upstream, relay, caplog
):
    """OpenAI's clients get OpenAI's own 404; the operator's metrics see the model is gone."""
    upstream.enqueue(Script(**RETIRED))
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(
            model="gpt-5.4-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.code == "model_not_found"
    [line] = request_lines(caplog)
    assert (line["outcome"], line["error_type"]) == ("model_unavailable", "model_unavailable")
    assert line["upstream_request_id"] == upstream.last.request_id


def test_another_rejection_on_v1_stays_the_callers_mistake(upstream, relay, caplog):
    upstream.enqueue(Script(status=400, error_code="invalid_value", error_message="bad"))
    response = httpx.post(
        f"{relay.url}/v1/chat/completions",
        json={"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    [line] = request_lines(caplog)
    assert (line["outcome"], line["error_type"]) == ("rejected", "upstream_rejected")


@pytest.fixture
def azure():
    server = AzureOpenAIServer(accepted_keys={TEST_KEY}).serve_in_thread()
    yield server
    server.stop()


def test_azure_openai_v1_api_is_an_upstream(azure, make_relay):
    """Base URL `https://<resource>.openai.azure.com/openai/v1/`, key in `api-key`."""
    relay = make_relay(openai_base_url=azure.base_url + "/", openai_key_header="api-key")
    assert azure.base_url.endswith("/openai/v1")
    azure.enqueue(Script(tokens=["from ", "azure"]))
    response = stream(f"{relay.url}/chat", {"prompt": "hi"}, SSE)
    assert deltas_text(response.events()) == "from azure"
    request = azure.last
    assert request.path == "/openai/v1/chat/completions"
    assert request.headers["api-key"] == TEST_KEY
    assert "authorization" not in request.headers


def test_azure_refuses_the_openai_style_bearer(azure, make_relay):
    """The double is strict: the relay's default header does not pass, so the test above
    proves the setting, not a lenient double."""
    relay = make_relay(openai_base_url=azure.base_url)
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_auth"
