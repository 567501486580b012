"""The cost policy's limits at their exact edges (found by `make mutants`): the last value a
limit allows passes and the first one past it is refused, on the OpenAI-compatible routes."""

from __future__ import annotations

import httpx
import pytest

MODEL = "gpt-5.4-mini"
USER = [{"role": "user", "content": "hi"}]


def completions(relay, **fields) -> httpx.Response:
    body = {"model": MODEL, "messages": USER, **fields}
    return httpx.post(f"{relay.url}/v1/chat/completions", json=body, timeout=15)


def responses(relay, **fields) -> httpx.Response:
    body = {"model": MODEL, "input": "hi", **fields}
    return httpx.post(f"{relay.url}/v1/responses", json=body, timeout=15)


@pytest.mark.parametrize("send", [completions, responses])
@pytest.mark.parametrize(
    ("temperature", "status"),
    [(0, 200), (2, 200), (1.5, 200), (-0.01, 400), (2.01, 400), ("warm", 400), (True, 400)],
)
def test_temperature_is_allowed_from_0_to_2_inclusive(upstream, relay, send, temperature, status):
    response = send(relay, temperature=temperature)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["param"] == "temperature"


@pytest.mark.parametrize(
    ("tokens", "status"), [(1, 200), (100, 200), (101, 400), (0, 400), (True, 400)]
)
def test_a_token_limit_is_a_positive_integer_up_to_the_cap(upstream, make_relay, tokens, status):
    relay = make_relay(max_tokens_cap=100)
    response = completions(relay, max_completion_tokens=tokens)
    assert response.status_code == status, response.text
    if status == 200:
        assert upstream.last.body["max_completion_tokens"] == tokens
    response = responses(relay, max_output_tokens=tokens)
    assert response.status_code == status, response.text


@pytest.mark.parametrize(("length", "status"), [(100, 200), (101, 400)])
def test_a_prompt_of_exactly_max_prompt_chars_passes(upstream, make_relay, length, status):
    """A string `input` alone is the whole prompt of a Responses request: its length counts."""
    relay = make_relay(max_prompt_chars=100)
    assert responses(relay, input="x" * length).status_code == status
