"""`GET /v1/models` lists the relay's allow-list in OpenAI's format, for the SDK's
`models.list()` and `models.retrieve()` and for the model pickers of OpenAI-speaking tools."""

from __future__ import annotations

import openai
import pytest


def test_models_list_is_the_allow_list_default_first(make_relay, upstream):
    relay = make_relay(default_model="gpt-5.4-mini", allowed_models="gpt-5.5,gpt-5.4-mini,gpt-4.1")
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything", max_retries=0)
    models = list(client.models.list())
    assert [model.id for model in models] == ["gpt-5.4-mini", "gpt-4.1", "gpt-5.5"]
    assert {model.object for model in models} == {"model"}
    assert client.models.retrieve("gpt-5.5").id == "gpt-5.5"
    assert upstream.requests == []  # answered by the relay itself


def test_a_model_outside_the_allow_list_is_not_found(relay):
    client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="anything", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4-32k")
    assert caught.value.body["code"] == "model_not_found"


def test_models_need_the_same_token_as_the_other_v1_routes(make_relay):
    relay = make_relay(client_tokens="models-client-token")
    refused = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        refused.models.list()
    allowed = openai.OpenAI(
        base_url=f"{relay.url}/v1", api_key="models-client-token", max_retries=0
    )
    assert [model.id for model in allowed.models.list()] == [relay.settings.default_model]
