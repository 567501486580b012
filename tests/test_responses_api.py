"""`/v1/responses` is OpenAI's Responses API behind the relay's guards: the official SDK's
`responses.create(stream=True)` and `responses.stream(...)` get every event unchanged, the exact
text and usage, and the exception classes they raise against OpenAI."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from devtools.openai_events import ResponsesEvents
from devtools.scripts import Script
from tests.helpers import logged_request, stream

TOKENS = ["Why ", "did\n\n", "data: the ", '"chicken"… ', "🐔"]
TEXT = "".join(TOKENS)


def sdk(relay, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything", max_retries=0, **options)


def test_create_stream_yields_every_event_and_the_exact_text(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS, delay_s=0.01))
    events = list(sdk(relay).responses.create(model="gpt-5.4-mini", input="joke", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == TEXT
    assert events[-1].response.output_text == TEXT
    assert events[-1].response.usage.output_tokens == len(TOKENS)
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_stream_helper_gets_the_final_response(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS))
    with sdk(relay).responses.stream(model="gpt-5.4-mini", input="joke") as answer:
        texts = [e.delta for e in answer if e.type == "response.output_text.delta"]
        final = answer.get_final_response()
    assert "".join(texts) == TEXT
    assert final.output_text == TEXT
    assert final.status == "completed"


def test_events_pass_through_byte_for_byte(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS))
    relayed = stream(f"{relay.url}/v1/responses", {"input": "joke", "stream": True})
    assert relayed.status == 200
    # The same answer asked of the fake directly, with the body the relay sent it.
    upstream.enqueue(Script(tokens=TOKENS))
    direct = stream(f"{upstream.base_url}/responses", upstream.last.body)
    assert relayed.body == direct.body


def test_non_streamed_answer(upstream, relay):
    upstream.enqueue(Script(tokens=TOKENS))
    answer = sdk(relay).responses.create(model="gpt-5.4-mini", input="joke")
    assert answer.output_text == TEXT
    assert answer.usage.output_tokens == len(TOKENS)


def test_the_relay_caps_output_refuses_storage_and_names_the_caller(upstream, make_relay):
    relay = make_relay(max_tokens_cap=300)
    upstream.enqueue(Script(tokens=["ok"]))
    sdk(relay).responses.create(model="gpt-5.4-mini", input="hi", user="claimed-user")
    sent = upstream.last.body
    assert upstream.last.path == "/v1/responses"
    assert sent["max_output_tokens"] == 300  # the cap, though the caller sent none
    assert sent["store"] is False  # OpenAI's default would keep the prompt
    assert "user" not in sent
    assert re.fullmatch(r"[0-9a-f]{32}", sent["safety_identifier"])  # the caller, hashed
    assert "claimed-user" not in json.dumps(sent)


def test_usage_and_model_reach_the_request_log(upstream, relay, caplog):
    upstream.enqueue(Script(tokens=TOKENS))
    list(sdk(relay).responses.create(model="gpt-5.4-mini", input="joke", stream=True))
    line = logged_request(caplog, "POST /v1/responses")
    assert line["model"] == "gpt-5.4-mini"
    assert line["outcome"] == "ok"
    assert line["usage"]["output_tokens"] == len(TOKENS)
    assert line["chunks"] == len(TOKENS)


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"model": "gpt-4-32k"}, "model"),
        ({"max_output_tokens": 5000}, "max_output_tokens"),
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"temperature": 3}, "temperature"),
        ({"input": ""}, "input"),
    ],
)
def test_what_the_policy_refuses_is_a_bad_request_error(upstream, relay, options, param):
    request = {"model": "gpt-5.4-mini", "input": "hi", **options}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(relay).responses.create(**request)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param
    assert caught.value.body["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_store_is_passed_on_when_the_operator_allows_it(upstream, make_relay):
    relay = make_relay(allow_store=True)
    upstream.enqueue(Script(tokens=["ok"]))
    sdk(relay).responses.create(model="gpt-5.4-mini", input="hi", store=True)
    assert upstream.last.body["store"] is True


def test_an_upstream_error_event_mid_stream_raises_in_the_sdk(upstream, relay):
    upstream.enqueue(Script(tokens=["a", "b", "c"], error_after=2, error_message="overloaded"))
    seen = []
    with pytest.raises(openai.APIError, match="overloaded"):
        for event in sdk(relay).responses.create(model="gpt-5.4-mini", input="x", stream=True):
            seen.append(event)
    assert "".join(e.delta for e in seen if e.type == "response.output_text.delta") == "ab"


def test_the_upstream_dying_mid_stream_ends_with_the_relays_error_event(upstream, relay):
    upstream.enqueue(Script(tokens=["a", "b", "c"], delay_s=0.02, die_after=2))
    with (
        pytest.raises(openai.APIError, match="the model's stream broke off") as caught,
        sdk(relay).responses.stream(model="gpt-5.4-mini", input="x") as answer,
    ):
        for _ in answer:
            pass
    assert caught.value.body["type"] == "upstream_error"
    upstream.enqueue(Script(tokens=["a", "b", "c"], delay_s=0.02, die_after=2))
    text = stream(f"{relay.url}/v1/responses", {"input": "x", "stream": True}).text
    assert text.endswith(
        'event: error\ndata: {"type":"error","error":{"message":"the model\'s stream broke off",'
        '"type":"upstream_error","param":null,"code":null}}\n\n'
    )


def test_upstream_failures_before_the_stream_raise_the_sdks_classes(upstream, make_relay):
    relay = make_relay(client_tokens="responses-client-token")
    with pytest.raises(openai.AuthenticationError):
        sdk(relay).responses.create(model="gpt-5.4-mini", input="x", stream=True)
    client = openai.OpenAI(
        base_url=f"{relay.url}/v1", api_key="responses-client-token", max_retries=0
    )
    upstream.enqueue(Script(status=429, headers={"Retry-After": "3"}))
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="gpt-5.4-mini", input="x", stream=True)
    upstream.enqueue(Script(status=500))
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="gpt-5.4-mini", input="x", stream=True)


def test_the_fake_speaks_the_event_sequence_the_sdk_accumulates(upstream):
    # The fake is this suite's stand-in for OpenAI: its own events must satisfy the SDK helper.
    upstream.enqueue(Script(tokens=TOKENS, finish_reason="length"))
    client = openai.OpenAI(base_url=upstream.base_url, api_key="sk-fake", max_retries=0)
    with client.responses.stream(model="gpt-5.4-mini", input="x") as answer:
        events = list(answer)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.output_text == TEXT
    assert events[2].item.id == ResponsesEvents.ITEM_ID


def test_unknown_v1_routes_are_openai_404s(relay):
    response = httpx.post(f"{relay.url}/v1/assistants", json={})
    assert response.status_code == 404
    with pytest.raises(openai.NotFoundError):
        sdk(relay).embeddings.create(model="text-embedding-3-small", input="x")


def test_instructions_are_the_relays_unless_the_operator_allows_the_callers(upstream, make_relay):
    relay = make_relay(system_prompt="Be brief.")
    upstream.enqueue(Script(tokens=["ok"]))
    sdk(relay).responses.create(model="gpt-5.4-mini", input="hi")
    assert upstream.last.body["instructions"] == "Be brief."
    for options, param in [
        ({"instructions": "Be rude."}, "instructions"),
        ({"input": [{"role": "developer", "content": "Be rude."}]}, "input[0].role"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk(relay).responses.create(**{"model": "gpt-5.4-mini", "input": "hi", **options})
        assert caught.value.body["param"] == param
    lenient = make_relay(system_prompt="Be brief.", allow_client_system_prompt=True)
    upstream.enqueue(Script(tokens=["ok"]))
    sdk(lenient).responses.create(model="gpt-5.4-mini", input="hi", instructions="Be poetic.")
    assert upstream.last.body["instructions"] == "Be poetic."
