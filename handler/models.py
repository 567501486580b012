"""Request bodies of the two chat endpoints, validated against the contract and the settings.

Validation errors are `INVALID_REQUEST` (422 on /chat, 400 on /v1) with the field as `param`.
Their message is their cause, so they are not logged (it may quote the caller's input).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from handler.errors import INVALID_JSON, RelayError, invalid_request
from handler.policy import (
    CHAT_COMPLETIONS_FIELDS,
    capped_tokens,
    chat_messages_chars,
    check_fields,
    check_model,
    check_prompt_size,
    check_temperature,
    client_instructions_refused,
    completion_token_limit,
    stream_flag,
    string_chars,
    with_system_prompt,
)
from handler.settings import Settings
from handler.tools import offered_tools


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    arguments: StrictStr


class ToolCall(BaseModel):
    """A call the model made, as an assistant message carries it back (OpenAI's shape)."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[StrictStr, Field(min_length=1)]
    type: Literal["function"]
    function: ToolCallFunction


class Message(BaseModel):
    """A chat message; `tool_calls` and `tool` messages are checked in handler/tools.py."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: StrictStr | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1)] | None = None
    tool_call_id: StrictStr | None = None


class ChatRequest(BaseModel):
    """The body of `POST /chat`."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr | None = None
    messages: list[Message] | None = None
    model: StrictStr | None = None
    temperature: Annotated[float, Field(ge=0, le=2, strict=True)] | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    tools: list[StrictStr] | None = None


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RelayError(INVALID_JSON, "the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise invalid_request("the body must be a JSON object")
    return data


def _describe(error: ValidationError) -> RelayError:
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return invalid_request(f"{where}: {message}" if where else message, param=where or None)


def chat_upstream_params(
    data: dict[str, Any], settings: Settings, *, events: bool = True
) -> dict[str, Any]:
    """Validate a `/chat` body and build the upstream request (system prompt, caps, usage,
    tools); `events` says whether the answer is an event stream, which tool calls need."""
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise _describe(exc) from exc
    if (request.prompt is None) == (request.messages is None):
        raise invalid_request("give exactly one of `prompt` or `messages`")
    if request.prompt is not None:
        if not request.prompt.strip():
            raise invalid_request("prompt is empty", "prompt")
        messages = [{"role": "user", "content": request.prompt}]
    else:
        if not request.messages:
            raise invalid_request("messages is empty", "messages")
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        for index, message in enumerate(messages):
            if message["role"] == "system" and not settings.allow_client_system_prompt:
                raise client_instructions_refused(f"messages[{index}].role")
    tools = offered_tools(
        request.tools, messages, settings.chat_tool_specs, settings.max_tool_steps, events=events
    )
    chars = string_chars(messages) + string_chars(tools.get("tools"))
    check_prompt_size(chars, len(messages), settings, "messages")
    params: dict[str, Any] = {
        "model": check_model(request.model, settings),
        "messages": with_system_prompt(messages, settings),
        "stream": True,
        "stream_options": {"include_usage": True},
        settings.upstream_token_limit_field: capped_tokens(
            request.max_tokens, "max_tokens", settings
        ),
    }
    if request.temperature is not None:
        params["temperature"] = request.temperature
    params.update(tools)
    return params


def completions_upstream_params(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Apply the cost policy to an OpenAI Chat Completions body and build the upstream request:
    allowed fields only, the system prompt rule, a capped token limit, usage on every stream."""
    check_fields(data, CHAT_COMPLETIONS_FIELDS, settings)
    messages = data.get("messages")
    chars = chat_messages_chars(messages, settings)
    chars += string_chars(data.get("tools")) + string_chars(data.get("response_format"))
    check_prompt_size(chars, len(messages), settings, "messages")
    stream = stream_flag(data)
    check_temperature(data.get("temperature"))
    limit_fields = ("max_tokens", "max_completion_tokens")
    params = {key: value for key, value in data.items() if key not in limit_fields}
    params["model"] = check_model(data.get("model"), settings)
    params["messages"] = with_system_prompt(messages, settings)
    params["stream"] = stream
    params.update(
        completion_token_limit(
            data,
            settings,
            accepted=limit_fields,
            default_field=settings.upstream_token_limit_field,
        )
    )
    if stream:
        # Usage always known: asked for here, dropped again from what the caller gets when the
        # caller did not ask (see `caller_asked_for_usage`).
        params["stream_options"] = {**_stream_options(data), "include_usage": True}
    return params


def _stream_options(data: dict[str, Any]) -> dict[str, Any]:
    options = data.get("stream_options")
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(v, bool) for v in options.values()):
        raise invalid_request("stream_options must be an object of booleans", "stream_options")
    return options


def caller_asked_for_usage(data: dict[str, Any]) -> bool:
    """Whether a streamed `/v1` request asked for the final usage chunk itself."""
    return _stream_options(data).get("include_usage") is True
