"""Request bodies of the two chat endpoints, validated against the contract and the settings.

Validation errors are `INVALID_REQUEST` (422 on /chat, 400 on /v1) with the field as `param`.
Their message is their cause, so they are not logged (it may quote the caller's input).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from handler.errors import INVALID_JSON, RelayError, invalid_request
from handler.settings import Settings


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: StrictStr


class ChatRequest(BaseModel):
    """The body of `POST /chat`."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr | None = None
    messages: list[Message] | None = None
    model: StrictStr | None = None
    temperature: Annotated[float, Field(ge=0, le=2, strict=True)] | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None


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


def _check_model(model: str | None, settings: Settings) -> str:
    model = model or settings.default_model
    if model not in settings.model_allow_list:
        allowed = ", ".join(sorted(settings.model_allow_list))
        raise invalid_request(f"model '{model}' is not allowed (allowed: {allowed})", "model")
    return model


def _check_max_tokens(value: object, param: str, settings: Settings) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise invalid_request(f"{param} must be a positive integer", param)
    if value > settings.max_tokens_cap:
        raise invalid_request(f"{param} is over the cap of {settings.max_tokens_cap}", param)


def _check_size(messages: list, chars: int, settings: Settings) -> None:
    if len(messages) > settings.max_messages:
        raise invalid_request(
            f"too many messages ({len(messages)} > {settings.max_messages})", "messages"
        )
    if chars > settings.max_prompt_chars:
        raise invalid_request(
            f"the prompt is too long ({chars} > {settings.max_prompt_chars} characters)",
            "messages",
        )


def chat_upstream_params(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate a `/chat` body and build the upstream request (system prompt, caps, usage)."""
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
        messages = [m.model_dump() for m in request.messages]
    _check_size(messages, sum(len(m["content"]) for m in messages), settings)
    model = _check_model(request.model, settings)
    _check_max_tokens(request.max_tokens, "max_tokens", settings)

    client_system = messages[0]["role"] == "system" and settings.allow_client_system_prompt
    if settings.system_prompt and not client_system:
        messages.insert(0, {"role": "system", "content": settings.system_prompt})
    params: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": request.max_tokens or settings.max_tokens_cap,
    }
    if request.temperature is not None:
        params["temperature"] = request.temperature
    return params


def _content_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return 0


def completions_upstream_params(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Check an OpenAI Chat Completions body against the relay's limits; pass the rest on."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("messages must be a non-empty list", "messages")
    if not all(isinstance(m, dict) for m in messages):
        raise invalid_request("every message must be an object", "messages")
    _check_size(messages, sum(_content_chars(m.get("content")) for m in messages), settings)
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid_request("model must be a string", "model")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid_request("stream must be a boolean", "stream")
    for param in ("max_tokens", "max_completion_tokens"):
        _check_max_tokens(data.get(param), param, settings)
    temperature = data.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise invalid_request("temperature must be a number from 0 to 2", "temperature")
    return {**data, "model": _check_model(model, settings), "stream": stream}
