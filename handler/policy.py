"""The relay's cost policy, one set of rules for every model route (docs/api.md, "Cost policy").

Which request fields may reach the upstream, how a prompt's size is counted, the completion-token
limit every upstream request carries, and who may write the system prompt. Each violation is an
`invalid_request` naming its `param`, raised before any upstream call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from handler.errors import RelayError, invalid_request
from handler.settings import Settings

# The request fields `/v1/chat/completions` passes on (the contract's allow-list, with the reason
# for each in docs/api.md). None of them can raise the cost of an answer beyond what the model,
# the prompt size and the token cap already bound.
CHAT_COMPLETIONS_FIELDS = frozenset(
    {
        "messages",
        "model",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "temperature",
        "top_p",
        "stop",
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "verbosity",
        # The relay replaces both with the caller's hashed identity (the access step).
        "user",
        "safety_identifier",
    }
)

# Why the fields an OpenAI client may know are refused; any other unknown field is refused too.
REFUSED_FIELDS = {
    "service_tier": "a service tier changes the price of every token",
    "store": "stored completions keep prompts at the provider",
    "metadata": "metadata is only used with stored completions",
    "audio": "audio output is billed at audio rates",
    "modalities": "only text output is relayed",
    "prediction": "rejected prediction tokens are billed on top of the answer",
    "web_search_options": "web search is billed per call",
    "functions": "use `tools`",
    "function_call": "use `tool_choice`",
    "prompt_cache_key": "the relay chooses how requests share a cache",
}

# Message roles of Chat Completions; system and developer messages are instructions.
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
INSTRUCTION_ROLES = frozenset({"system", "developer"})

# Content part types and the field each must carry (a string, or an object of strings).
CONTENT_PARTS = {
    "text": "text",
    "image_url": "image_url",
    "input_audio": "input_audio",
    "file": "file",
    "refusal": "refusal",
}


def check_fields(body: Mapping[str, Any], allowed: frozenset[str], settings: Settings) -> None:
    """Refuse every field outside `allowed` and the operator's `ALLOWED_EXTRA_FIELDS`."""
    extra = settings.allowed_extra_fields
    for name in body:
        if name not in allowed and name not in extra:
            reason = REFUSED_FIELDS.get(name, "this relay does not accept it")
            raise invalid_request(f"unsupported field '{name}': {reason}", name)
    n = body.get("n")
    if not (n is None or (type(n) is int and n == 1)) and "n" not in extra:
        raise invalid_request("n must be 1: each extra choice is billed as another answer", "n")


def string_chars(value: object) -> int:
    """Characters in every string of a JSON value (keys aside): what a prompt costs to send.

    Iterative, so a deeply nested body cannot exhaust the stack."""
    total, pending = 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return total


def check_prompt_size(chars: int, count: int, settings: Settings, param: str) -> None:
    """Refuse more than `MAX_MESSAGES` messages or `MAX_PROMPT_CHARS` characters."""
    if count > settings.max_messages:
        raise invalid_request(f"too many messages ({count} > {settings.max_messages})", param)
    if chars > settings.max_prompt_chars:
        raise invalid_request(
            f"the prompt is too long ({chars} > {settings.max_prompt_chars} characters)", param
        )


def chat_messages_chars(messages: object, settings: Settings) -> int:
    """Check Chat Completions `messages` (roles, content parts, who writes instructions) and
    return their size: every string of every message counts, whatever the part type."""
    if not isinstance(messages, list) or not messages:
        raise invalid_request("messages must be a non-empty list", "messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid_request(f"{where} must be an object", where)
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise invalid_request(
                f"{where}.role must be one of {_listed(CHAT_ROLES)}", f"{where}.role"
            )
        if role in INSTRUCTION_ROLES and not settings.allow_client_system_prompt:
            raise client_instructions_refused(f"{where}.role")
        content = message.get("content")
        if isinstance(content, list):
            for number, part in enumerate(content):
                _check_content_part(part, f"{where}.content[{number}]")
        elif content is not None and not isinstance(content, str):
            raise invalid_request(f"{where}.content must be a string or a list of parts", where)
    return string_chars(messages)


def _check_content_part(part: object, where: str) -> None:
    if not isinstance(part, dict):
        raise invalid_request(f"{where} must be an object", where)
    kind = part.get("type")
    field = CONTENT_PARTS.get(kind) if isinstance(kind, str) else None
    if field is None:
        raise invalid_request(f"{where}.type must be one of {_listed(CONTENT_PARTS)}", where)
    value = part.get(field)
    if field in ("text", "refusal"):
        if not isinstance(value, str):
            raise invalid_request(f"{where}.{field} must be a string", f"{where}.{field}")
    elif not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid_request(f"{where}.{field} must be an object of strings", f"{where}.{field}")


def client_instructions_refused(param: str) -> RelayError:
    """The error for a system or developer message when `ALLOW_CLIENT_SYSTEM_PROMPT` is false."""
    return invalid_request(
        "system and developer messages are set by the relay (ALLOW_CLIENT_SYSTEM_PROMPT=false)",
        param,
    )


def with_system_prompt(messages: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """The messages with `SYSTEM_PROMPT` first, unless the caller's own instructions (allowed
    only with `ALLOW_CLIENT_SYSTEM_PROMPT`) already open the conversation."""
    if not settings.system_prompt or messages[0].get("role") in INSTRUCTION_ROLES:
        return messages
    return [{"role": "system", "content": settings.system_prompt}, *messages]


def completion_token_limit(
    body: Mapping[str, Any], settings: Settings, *, accepted: Iterable[str], default_field: str
) -> dict[str, int]:
    """The completion-token limit of the upstream request, always at or under `MAX_TOKENS_CAP`:
    the caller's own `accepted` fields once checked, else `default_field` at the cap."""
    limit = {
        param: capped_tokens(body[param], param, settings)
        for param in accepted
        if body.get(param) is not None
    }
    return limit or {default_field: settings.max_tokens_cap}


def capped_tokens(value: object, param: str, settings: Settings) -> int:
    """A caller's token limit once checked (a positive integer at or under the cap), or the cap."""
    cap = settings.max_tokens_cap
    if value is None:
        return cap
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise invalid_request(f"{param} must be a positive integer", param)
    if value > cap:
        raise invalid_request(f"{param} is over the cap of {cap}", param)
    return value


def check_model(model: object, settings: Settings) -> str:
    """The model to call: the request's, which must be in `ALLOWED_MODELS`, or the default."""
    if model is None:
        model = settings.default_model
    if not isinstance(model, str):
        raise invalid_request("model must be a string", "model")
    if model not in settings.model_allow_list:
        allowed = ", ".join(sorted(settings.model_allow_list))
        raise invalid_request(f"model '{model}' is not allowed (allowed: {allowed})", "model")
    return model


def stream_flag(body: Mapping[str, Any]) -> bool:
    """Whether the caller asked for a stream (`stream`, a boolean, default false)."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid_request("stream must be a boolean", "stream")
    return stream


def check_temperature(temperature: object) -> None:
    """A sampling temperature, if any, is a number from 0 to 2."""
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise invalid_request("temperature must be a number from 0 to 2", "temperature")


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))
