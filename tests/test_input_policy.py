"""What input may carry, on every model route (docs/api.md, "Media" and "No stored state"):
media parts are refused unless the operator allows them and then counted at their worst-case
price; nothing in input may reach state kept at OpenAI or make OpenAI fetch a URL; hosted tools
are refused in `tool_choice` as in `tools`; `prompt_cache_key` has one verdict. Every refusal is
a 400 naming its field, and the OpenAI double receives nothing."""

from __future__ import annotations

import base64

import httpx
import pytest

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
PDF = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 hello").decode()


def post(relay, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{relay.url}{path}", json=body, timeout=30)


def assert_refused(response: httpx.Response, param: str, *words: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error


def chat_image(url: str, detail: str = "high") -> dict:
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def chat_with(*parts: dict) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "look"}, *parts]}]}


def responses_with(*parts: dict) -> dict:
    content = [{"type": "input_text", "text": "look"}, *parts]
    return {"input": [{"role": "user", "content": content}]}


def test_hundreds_of_images_never_reach_the_upstream_under_the_defaults(upstream, relay):
    """The issue's repro: 340 high-detail image URLs in a 32 KB body passed the prompt cap."""
    images = [chat_image(f"https://example.com/{n}.png") for n in range(340)]
    assert_refused(
        post(relay, "/v1/chat/completions", chat_with(*images)),
        "messages[0].content[1].image_url.url",
    )
    data_images = [chat_image(PNG) for _ in range(340)]
    assert_refused(
        post(relay, "/v1/chat/completions", chat_with(*data_images)),
        "messages[0].content[1]",
        "ALLOW_IMAGES=false",
    )
    inputs = [{"type": "input_image", "image_url": PNG, "detail": "high"} for _ in range(340)]
    assert_refused(
        post(relay, "/v1/responses", responses_with(*inputs)),
        "input[0].content[1]",
        "ALLOW_IMAGES=false",
    )
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("model", "detail", "tokens"),
    [
        ("gpt-4o", "high", 1_445),  # 85 + 8 tiles of 170
        ("gpt-4o", "low", 85),
        ("gpt-4o", "auto", 1_445),
        ("gpt-4.1-mini", "low", 2_642),  # patched: the 1,536-patch cap, whatever the detail
        ("gpt-4o-mini", "high", 48_169),
        ("ft:gpt-4o-2024-08-06:acme::abc", "low", 85),
        ("gpt-5.4-mini", "high", 2_642),
        ("my-own-model-o1", "low", 2_833),  # a name the table does not know: the dearest
    ],
)
def test_an_allowed_image_counts_its_worst_case_price_against_the_cap(
    upstream, make_relay, model, detail, tokens
):
    """An image counts its price in tokens at four characters a token: a cap one character
    short of one image and its text refuses it, a cap that fits it lets it through."""
    # Every string counts (role, part types, text); the image object counts only its price.
    text = len("user") + len("text") + len("look") + len("image_url")
    body = {**chat_with(chat_image(PNG, detail)), "model": model}
    fits = text + tokens * 4
    tight = make_relay(allow_images=True, allowed_models=model, max_prompt_chars=fits - 1)
    assert_refused(post(tight, "/v1/chat/completions", body), "messages", "too long")
    assert upstream.requests == []
    roomy = make_relay(allow_images=True, allowed_models=model, max_prompt_chars=fits)
    assert post(roomy, "/v1/chat/completions", body).status_code == 200
    assert upstream.last.body["messages"][-1]["content"][1]["image_url"]["url"] == PNG


def test_an_image_is_priced_at_the_dearest_allowed_model(upstream, make_relay):
    body = {**chat_with(chat_image(PNG, "low")), "model": "gpt-4o"}
    one_cheap_image = 40 + 85 * 4
    relay = make_relay(
        allow_images=True, allowed_models="gpt-4o,gpt-4o-mini", max_prompt_chars=one_cheap_image
    )
    assert_refused(post(relay, "/v1/chat/completions", body), "messages", "too long")
    assert upstream.requests == []


def test_responses_images_and_files_count_their_price(upstream, make_relay):
    relay = make_relay(
        allow_images=True, allow_files=True, allowed_models="gpt-4o", max_prompt_chars=2_000
    )
    image = {"type": "input_image", "image_url": PNG, "detail": "low"}
    body = {**responses_with(image), "model": "gpt-4o"}
    assert post(relay, "/v1/responses", body).status_code == 200
    two_high = [{"type": "input_image", "image_url": PNG} for _ in range(2)]
    body = {**responses_with(*two_high), "model": "gpt-4o"}
    assert_refused(post(relay, "/v1/responses", body), "input", "too long")
    big_file = {"type": "input_file", "filename": "a.pdf", "file_data": PDF + "A" * 2_000}
    body = {**responses_with(big_file), "model": "gpt-4o"}
    assert_refused(post(relay, "/v1/responses", body), "input", "too long")
    assert len(upstream.requests) == 1


def test_an_allowed_sound_counts_a_token_per_64_characters_of_its_data(upstream, make_relay):
    data = "A" * 64 * 100  # 100 tokens: 400 characters of the cap, not 6,400
    part = {"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}
    text = len("user") + len("text") + len("look") + len("input_audio")
    relay = make_relay(allow_audio=True, max_prompt_chars=text + 400)
    assert post(relay, "/v1/chat/completions", chat_with(part)).status_code == 200
    tight = make_relay(allow_audio=True, max_prompt_chars=text + 399)
    assert_refused(post(tight, "/v1/chat/completions", chat_with(part)), "messages", "too long")
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    ("part", "param", "switch"),
    [
        ({"type": "file", "file": {"file_data": PDF}}, "messages[0].content[1]", "ALLOW_FILES"),
        (
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            "messages[0].content[1]",
            "ALLOW_AUDIO",
        ),
    ],
)
def test_files_and_audio_are_refused_unless_allowed(upstream, make_relay, part, param, switch):
    assert_refused(post(make_relay(), "/v1/chat/completions", chat_with(part)), param, switch)
    assert upstream.requests == []
    allowed = make_relay(allow_files=True, allow_audio=True)
    assert post(allowed, "/v1/chat/completions", chat_with(part)).status_code == 200


STORED_STATE_CHAT = {
    "file-id": (
        {"type": "file", "file": {"file_id": "file-abc123"}},
        "messages[0].content[1].file.file_id",
    ),
    "image-url-http": (
        chat_image("http://169.254.169.254/latest"),
        "messages[0].content[1].image_url.url",
    ),
    "image-url-https": (
        chat_image("https://example.com/a.png"),
        "messages[0].content[1].image_url.url",
    ),
}
STORED_STATE_RESPONSES = {
    "item-reference": ({"type": "item_reference", "id": "msg_abc"}, "input[1].type"),
    "reasoning": ({"type": "reasoning", "id": "rs_abc", "summary": []}, "input[1].type"),
    "file-id": (
        {"role": "user", "content": [{"type": "input_file", "file_id": "file-abc"}]},
        "input[1].content[0].file_id",
    ),
    "file-url": (
        {"role": "user", "content": [{"type": "input_file", "file_url": "https://x.test/a"}]},
        "input[1].content[0].file_url",
    ),
    "image-file-id": (
        {"role": "user", "content": [{"type": "input_image", "file_id": "file-abc"}]},
        "input[1].content[0].file_id",
    ),
    "image-url": (
        {"role": "user", "content": [{"type": "input_image", "image_url": "https://x.test/a"}]},
        "input[1].content[0].image_url",
    ),
    "hosted-call": (
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        "input[1].type",
    ),
}


@pytest.mark.parametrize(
    ("part", "param"), STORED_STATE_CHAT.values(), ids=STORED_STATE_CHAT.keys()
)
def test_chat_input_cannot_reach_stored_state_or_a_url(upstream, make_relay, part, param):
    # Even with every kind of media allowed: a reference is refused for what it is.
    relay = make_relay(allow_images=True, allow_files=True)
    assert_refused(post(relay, "/v1/chat/completions", chat_with(part)), param)
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("item", "param"), STORED_STATE_RESPONSES.values(), ids=STORED_STATE_RESPONSES.keys()
)
def test_responses_input_cannot_reach_stored_state_or_a_url(upstream, make_relay, item, param):
    relay = make_relay(allow_images=True, allow_files=True)
    body = {"input": [{"role": "user", "content": "hi"}, item]}
    assert_refused(post(relay, "/v1/responses", body), param)
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("previous_response_id", "resp_abc"),
        ("conversation", "conv_abc"),
        ("prompt", {"id": "pmpt_abc"}),
        ("background", True),
    ],
)
def test_responses_fields_that_read_stored_state_are_refused(upstream, relay, field, value):
    assert_refused(post(relay, "/v1/responses", {"input": "hi", field: value}), field, "stored")
    assert upstream.requests == []


def test_an_assistant_messages_audio_reference_is_refused(upstream, relay):
    body = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "audio": {"id": "audio_abc"}},
        ]
    }
    assert_refused(post(relay, "/v1/chat/completions", body), "messages[1].audio", "OpenAI")
    assert upstream.requests == []


def test_remote_image_urls_pass_only_when_the_operator_allows_them(upstream, make_relay):
    relay = make_relay(allow_images=True, allow_image_urls=True, max_prompt_chars=100_000)
    https = chat_image("https://example.com/a.png")
    assert post(relay, "/v1/chat/completions", chat_with(https)).status_code == 200
    http = chat_image("http://example.com/a.png")
    param = "messages[0].content[1].image_url.url"
    assert_refused(post(relay, "/v1/chat/completions", chat_with(http)), param)
    assert len(upstream.requests) == 1


def test_an_answer_sent_back_as_history_passes_as_openai_wrote_it(upstream, relay):
    """What `choices[0].message` holds, sent back as the next turn's history: null fields carry
    nothing, and the answer's `annotations` are text."""
    answer = {
        "role": "assistant",
        "content": "Hello.",
        "refusal": None,
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": None,
    }
    body = {
        "messages": [{"role": "user", "content": "hi"}, answer, {"role": "user", "content": "more"}]
    }
    assert post(relay, "/v1/chat/completions", body).status_code == 200
    assert len(upstream.requests) == 1


def test_a_history_of_messages_and_function_calls_still_passes(upstream, relay):
    body = {
        "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}],
            },
            {"role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
        ]
    }
    assert post(relay, "/v1/responses", body).status_code == 200
    assert upstream.last.body["input"] == body["input"]


@pytest.mark.parametrize(
    ("path", "choice"),
    [
        ("/v1/responses", {"type": "web_search_preview"}),
        ("/v1/responses", {"type": "file_search"}),
        ("/v1/responses", {"type": "mcp", "server_label": "x"}),
        (
            "/v1/responses",
            {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "code_interpreter"}]},
        ),
        ("/v1/chat/completions", {"type": "web_search"}),
    ],
)
def test_a_hosted_tool_is_refused_in_tool_choice_as_in_tools(upstream, relay, path, choice):
    body = {"input": "hi"} if path == "/v1/responses" else chat_with()
    assert_refused(post(relay, path, {**body, "tool_choice": choice}), "tool_choice", "hosted")
    hosted_tool = (
        {"type": choice["type"]}
        if choice["type"] != "allowed_tools"
        else {"type": "code_interpreter"}
    )
    assert_refused(post(relay, path, {**body, "tools": [hosted_tool]}), "tools[0]", "hosted")
    assert upstream.requests == []


def test_function_tool_choices_still_pass(upstream, relay):
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    for choice in ("auto", {"type": "function", "name": "f"}):
        body = {"input": "hi", "tools": [tool], "tool_choice": choice}
        assert post(relay, "/v1/responses", body).status_code == 200
    assert len(upstream.requests) == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/responses", {"input": "hi"}), ("/v1/chat/completions", chat_with())],
)
def test_prompt_cache_key_gets_one_verdict_on_both_routes(upstream, relay, path, body):
    response = post(relay, path, {**body, "prompt_cache_key": "shared"})
    assert_refused(response, "prompt_cache_key", "the relay chooses how requests share a cache")
    assert upstream.requests == []


def test_the_chat_routes_carry_no_media_or_reference(upstream, relay):
    image = {"role": "user", "content": [chat_image(PNG)]}
    assert post(relay, "/chat", {"messages": [image]}).status_code == 422
    ui = {
        "messages": [
            {
                "id": "m1",
                "role": "user",
                "parts": [
                    {"type": "file", "mediaType": "image/png", "url": "https://x.test/a.png"}
                ],
            }
        ]
    }
    refused = post(relay, "/api/chat", ui)
    assert refused.status_code == 422
    assert refused.json()["error"]["message"].startswith("messages.0.parts.0: only text parts")
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/responses", {"input": [{"role": {}, "content": "hi"}]}, "input[0].role"),
        ("/v1/responses", {"input": [{"type": ["message"]}]}, "input[0].type"),
        (
            "/v1/responses",
            responses_with({"type": "input_image", "image_url": PNG, "detail": ["high"]}),
            "input[0].content[1].detail",
        ),
        (
            "/v1/chat/completions",
            chat_with({"type": "input_audio", "input_audio": {"data": "x", "format": {}}}),
            "messages[0].content[1].input_audio.format",
        ),
        ("/v1/chat/completions", chat_with({"type": {}}), "messages[0].content[1]"),
        ("/v1/responses", {"input": "hi", "tools": [{"type": {}}]}, "tools[0].type"),
        ("/v1/responses", {"input": "hi", "tool_choice": {"type": ["x"]}}, "tool_choice"),
    ],
)
def test_a_value_of_the_wrong_shape_is_a_400_never_a_500(upstream, relay, path, body, param):
    assert_refused(post(relay, path, body), param)
    assert upstream.requests == []
