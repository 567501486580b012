"""Request bodies of the model routes as pydantic models, and the `/chat` policy applied to them.

The models type what the cost policy (handler/policy.py) reads, so no JSON value of any type
reaches a check that would misread it; what the policy does not read passes through as sent.
A body that fails its model is FastAPI's `RequestValidationError`, which app.py's error table
renders as `INVALID_REQUEST` (422 on /chat, 400 on /v1) naming the field; its message is its
cause, so it is not logged (it may quote the caller's input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    WithJsonSchema,
)

from handler.errors import INVALID_JSON, RelayError, invalid_request
from handler.policy import (
    CHAT_COMPLETIONS_FIELDS,
    CHAT_TOOL_TYPES,
    capped_tokens,
    chat_messages_chars,
    check_fields,
    check_model,
    check_prompt_size,
    check_temperature,
    check_tools,
    client_instructions_refused,
    completion_token_limit,
    stream_flag,
    string_chars,
    with_system_prompt,
)
from handler.settings import Settings
from handler.tools import offered_tools

# A number as JSON has it: an int is a float here, a boolean is not.
Number = Annotated[float, Strict()]
# The union branches are told apart by the value's JSON type; these tags name them in an
# error's location, and `error_param` leaves them out of the field's name.
_TEXT, _LIST, _OBJECT = "string", "list", "object"
UNION_TAGS = frozenset({_TEXT, _LIST, _OBJECT})


def _json_kind(value: object) -> str:
    if isinstance(value, str):
        return _TEXT
    return _OBJECT if isinstance(value, dict) else _LIST


def text_or(other: Any, tag: str) -> Any:
    """A string, or `other` (a list or an object, named by `tag`): one branch is checked, the
    one the value's JSON type picks, so an error is about the field, not pydantic's union."""
    return Annotated[
        Annotated[StrictStr, Tag(_TEXT)] | Annotated[other, Tag(tag)], Discriminator(_json_kind)
    ]


# Passed through as sent: the upstream reads it, the policy counts its strings.
JsonObject = dict[str, Any]
Passed = ConfigDict(extra="allow")
Closed = ConfigDict(extra="forbid")


# --- /chat and /api/chat --------------------------------------------------------------------


class ToolCallFunction(BaseModel):
    model_config = Closed

    name: StrictStr
    arguments: StrictStr


class ToolCall(BaseModel):
    """A call the model made, as an assistant message carries it back (OpenAI's shape)."""

    model_config = Closed

    id: Annotated[StrictStr, Field(min_length=1)]
    type: Literal["function"]
    function: ToolCallFunction


class Message(BaseModel):
    """A chat message; `tool_calls` and `tool` messages are checked in handler/tools.py."""

    model_config = Closed

    role: Literal["system", "user", "assistant", "tool"]
    content: StrictStr | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1)] | None = None
    tool_call_id: StrictStr | None = None


class ChatOptions(BaseModel):
    """What `/chat` and `/api/chat` accept besides the conversation."""

    model: StrictStr | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    # Narrows CHAT_TOOLS by name (the AI SDK's `body` option on /api/chat).
    tools: list[StrictStr] | None = None


class ChatRequest(ChatOptions):
    """The body of `POST /chat`: exactly one of `prompt` or `messages`."""

    model_config = Closed

    prompt: StrictStr | None = None
    messages: list[Message] | None = None


class UiPart(BaseModel):
    """A part of a UI message: text parts are sent, display-only ones skipped (uichat.py)."""

    model_config = Passed

    type: StrictStr
    text: StrictStr | None = None


class UiMessage(BaseModel):
    model_config = Passed

    id: StrictStr | None = None
    role: Literal["system", "user", "assistant"]
    parts: list[UiPart]


class UiChatRequest(ChatOptions):
    """The body of `POST /api/chat`: what the AI SDK's `DefaultChatTransport` sends."""

    model_config = Closed

    id: StrictStr | None = None
    messages: Annotated[list[UiMessage], Field(min_length=1)]
    trigger: StrictStr | None = None
    messageId: StrictStr | None = None  # the AI SDK's name


# --- /v1/chat/completions -------------------------------------------------------------------

# Roles and content are judged by the policy, which names the broken message or part; the
# models only say what they are, for the OpenAPI document.
_ROLE_SCHEMA = WithJsonSchema(
    {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]}
)
_CONTENT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string"},
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "description": "`text` / `refusal` carry a string; `image_url` /"
                    " `input_audio` / `file` an object of strings",
                    "properties": {
                        "type": {"enum": ["text", "refusal", "image_url", "input_audio", "file"]}
                    },
                    "required": ["type"],
                },
            },
            {"type": "null"},
        ]
    }
)


class ChatMessage(BaseModel):
    model_config = Passed

    role: Annotated[StrictStr, _ROLE_SCHEMA]
    content: Annotated[Any, _CONTENT_SCHEMA] = None
    name: StrictStr | None = None
    tool_call_id: StrictStr | None = None
    tool_calls: list[JsonObject] | None = None


class ChatCompletionsRequest(BaseModel):
    """The body of `POST /v1/chat/completions`, OpenAI's; only the fields of the contract's
    allow-list pass (handler/policy.py refuses the others, naming the reason)."""

    model_config = Passed

    messages: list[ChatMessage]
    model: StrictStr | None = None
    stream: StrictBool = False
    stream_options: dict[str, StrictBool] | None = None
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    n: StrictInt | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    stop: text_or(list[StrictStr], _LIST) | None = None
    frequency_penalty: Number | None = None
    presence_penalty: Number | None = None
    seed: StrictInt | None = None
    logit_bias: dict[str, Number] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = None
    response_format: JsonObject | None = None
    tools: list[JsonObject] | None = None
    tool_choice: text_or(JsonObject, _OBJECT) | None = None
    parallel_tool_calls: StrictBool | None = None
    reasoning_effort: StrictStr | None = None
    verbosity: StrictStr | None = None
    user: StrictStr | None = None
    safety_identifier: StrictStr | None = None


# --- /v1/responses --------------------------------------------------------------------------


class ResponsesContentPart(BaseModel):
    model_config = Passed

    type: StrictStr
    text: StrictStr | None = None


class ResponsesInputItem(BaseModel):
    """An input item: a message (`role`, `content`) or another item `type` (function call
    output, ...), passed on as sent once its shape is known."""

    model_config = Passed

    type: StrictStr | None = None
    role: StrictStr | None = None
    content: text_or(list[ResponsesContentPart], _LIST) | None = None


class ResponsesTool(BaseModel):
    model_config = Passed

    type: StrictStr


class ResponsesRequest(BaseModel):
    """The body of `POST /v1/responses`, OpenAI's Responses API under the relay's allow-list."""

    model_config = Passed

    input: text_or(list[ResponsesInputItem], _LIST)
    model: StrictStr | None = None
    instructions: StrictStr | None = None
    max_output_tokens: StrictInt | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_logprobs: StrictInt | None = None
    stream: StrictBool = False
    stream_options: dict[str, StrictBool] | None = None
    store: StrictBool = False
    include: list[StrictStr] | None = None
    metadata: dict[str, StrictStr] | None = None
    text: JsonObject | None = None
    reasoning: JsonObject | None = None
    truncation: StrictStr | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: text_or(JsonObject, _OBJECT) | None = None
    parallel_tool_calls: StrictBool | None = None
    prompt_cache_key: StrictStr | None = None
    user: StrictStr | None = None
    safety_identifier: StrictStr | None = None


# --- Errors as the contract shows them ------------------------------------------------------


class RelayErrorDetail(BaseModel):
    type: str = Field(description="the error's kind (docs/api.md, 'Errors')")
    message: str


class RelayErrorBody(BaseModel):
    """An error on `/chat` and `/api/chat`."""

    error: RelayErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="`invalid_request_error`, or the relay's failure kind")
    param: str | None = Field(description="the field at fault, if any")
    code: str | None = Field(description="the relay's kind of an invalid request")


class OpenAIErrorBody(BaseModel):
    """An error on `/v1/*`, in OpenAI's shape, so OpenAI's SDKs raise their own classes."""

    error: OpenAIErrorDetail


# --- From a body to the upstream request ----------------------------------------------------


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RelayError(INVALID_JSON, "the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise invalid_request("the body must be a JSON object")
    return data


def error_param(loc: Sequence[int | str], openai_style: bool) -> str:
    """The field an error is about: `messages[0].role` as OpenAI names it on /v1 (and as the
    policy does), `messages.0.role` on /chat."""
    where = ""
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]" if openai_style else f".{part}"
        elif part not in UNION_TAGS:
            where += f".{part}" if where else part
    return where.lstrip(".")


def invalid_field(error: Mapping[str, Any], openai_style: bool) -> RelayError:
    """The contract's error for one of pydantic's (the first a model found)."""
    loc = tuple(error.get("loc", ()))
    if loc[:1] == ("body",):
        loc = loc[1:]
    where = error_param(loc, openai_style)
    message = "unknown field" if error.get("type") == "extra_forbidden" else str(error["msg"])
    return invalid_request(f"{where}: {message}" if where else message, param=where or None)


def chat_upstream_params(
    request: ChatRequest, settings: Settings, *, events: bool = True
) -> dict[str, Any]:
    """Apply the policy to a `/chat` body and build the upstream request (system prompt, caps,
    usage, tools); `events` says whether the answer is an event stream, which tool calls need."""
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
    """Apply the cost policy to an OpenAI Chat Completions body (already checked against
    `ChatCompletionsRequest`) and build the upstream request: allowed fields only, the system
    prompt rule, a capped token limit, usage on every stream."""
    check_fields(data, CHAT_COMPLETIONS_FIELDS, settings)
    messages = data.get("messages")
    chars = chat_messages_chars(messages, settings)
    chars += string_chars(data.get("tools")) + string_chars(data.get("response_format"))
    check_tools(data, CHAT_TOOL_TYPES)
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
