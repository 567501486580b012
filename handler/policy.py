"""The relay's cost policy, one set of rules for every model route (docs/api.md, "Cost policy").

Which request fields may reach the upstream, how a prompt's size is counted, the completion-token
limit every upstream request carries, and who may write the system prompt. Each violation is an
`invalid_request` naming its `param`, raised before any upstream call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
    "previous_response_id": "it reads a response stored at OpenAI",
    "conversation": "it reads a conversation stored at OpenAI",
    "prompt": "it reads a prompt template stored at OpenAI",
    "background": "a background response is stored at OpenAI",
}

# Message roles of Chat Completions; system and developer messages are instructions.
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
INSTRUCTION_ROLES = frozenset({"system", "developer"})

# Chat Completions' message fields by role. Left out on purpose: an assistant message's `audio`
# (a reference to audio OpenAI keeps) and `function_call` (use `tool_calls`).
CHAT_MESSAGE_FIELDS = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "refusal", "annotations"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}

# Fields that point at state kept at OpenAI, or at a URL OpenAI would fetch: refused wherever
# they appear in input, whatever the operator allows (docs/api.md, "No stored state").
STORED_STATE_FIELDS = {
    "file_id": "it refers to a file stored at OpenAI; send the file's data instead",
    "file_url": "OpenAI would fetch the URL; send the file's data instead",
    "audio": "it refers to audio kept at OpenAI",
}
# Input item types of the Responses API that read state kept at OpenAI or run hosted tools.
REFUSED_ITEM_TYPES = {
    "item_reference": "it reads an item stored at OpenAI",
    "reasoning": "a reasoning item can be read from OpenAI's store by its id",
}
# The Responses API's input items the relay passes, and the fields each may carry.
RESPONSES_ITEM_FIELDS = {
    "message": frozenset({"type", "role", "content", "id", "status"}),
    "function_call": frozenset({"type", "call_id", "name", "arguments", "id", "status"}),
    "function_call_output": frozenset({"type", "call_id", "output", "id", "status"}),
}
RESPONSES_ROLES = frozenset({"user", "assistant", "system", "developer"})

# --- What media costs (docs/api.md, "Media"): each part is counted at its worst case. ---
# The prompt cap is in characters; a token of media counts as the four characters a token of
# English text averages, so the cap bounds a prompt's tokens the same way whatever it holds.
CHARS_PER_TOKEN = 4
IMAGE_DETAILS = frozenset({"low", "high", "auto"})
# (model family, matched at the start of the model's name, tokens of one image at `high` or
# `auto`, at `low`), first match wins, from OpenAI's vision pricing. Tiled models: base + 8
# tiles of 512 px (the most a 2048x768 image is cut into); patched models: the 1,536-patch cap
# times the model's multiplier, whatever the detail. A model the table does not know costs
# what the dearest family costs.
IMAGE_TOKENS = tuple(
    (re.compile(family), high, low)
    for family, high, low in (
        (r"gpt-4o-mini", 2_833 + 8 * 5_667, 2_833),
        (r"(gpt-4\.1|gpt-5[.\d]*|o\d)-nano", 3_779, 3_779),  # 1,536 patches x 2.46
        (r"(gpt-4\.1|gpt-5[.\d]*|o\d)-mini", 2_642, 2_642),  # x 1.62 (gpt-4.1/5), x 1.72 (o4)
        (r"gpt-4\.1", 1_536, 1_536),
        (r"(chatgpt-|gpt-)4o|gpt-4\.5", 85 + 8 * 170, 85),
        (r"gpt-5", 70 + 8 * 140, 70),
        (r"o[13]", 75 + 8 * 150, 75),
    )
)
UNKNOWN_MODEL_IMAGE_TOKENS = (2_833 + 8 * 5_667, 2_833)
# A file is what OpenAI extracts from it (text, and an image of each PDF page), which the relay
# cannot see: it counts one token per character of its base64 data (4/3 per byte of the file),
# which bounds a text file; a compressed PDF can cost more, so files are off by default.
FILE_TOKENS_PER_DATA_CHAR = 1
# Audio is billed about one token per 100 ms; at 8 kbit/s (the least a wav or mp3 carries) that
# is one token per 133 base64 characters. Counted at twice that: one per 64 characters.
AUDIO_DATA_CHARS_PER_TOKEN = 64
AUDIO_FORMATS = frozenset({"wav", "mp3"})
# Chat formats wrap each message (or input item) in a few tokens of their own.
TOKENS_PER_MESSAGE = 4


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
    """Check Chat Completions `messages` (roles, allow-listed fields and content parts, who writes
    instructions) and return their size: every string, and each media part at its price."""
    if not isinstance(messages, list) or not messages:
        raise invalid_request("messages must be a non-empty list", "messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid_request(f"{where} must be an object", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise invalid_request(
                f"{where}.role must be one of {_listed(CHAT_ROLES)}", f"{where}.role"
            )
        _check_item_fields(message, CHAT_MESSAGE_FIELDS[role], where)
        if role in INSTRUCTION_ROLES and not settings.allow_client_system_prompt:
            raise client_instructions_refused(f"{where}.role")
        content = message.get("content")
        if isinstance(content, list):
            for number, part in enumerate(content):
                check_chat_part(part, f"{where}.content[{number}]", settings)
        elif content is not None and not isinstance(content, str):
            raise invalid_request(f"{where}.content must be a string or a list of parts", where)
    return prompt_chars(messages, settings)


def check_chat_part(part: object, where: str, settings: Settings) -> None:
    """One Chat Completions content part: an allow-listed type with allow-listed fields."""
    if not isinstance(part, dict):
        raise invalid_request(f"{where} must be an object", where)
    kind = part.get("type")
    if kind in ("text", "refusal"):
        _check_item_fields(part, frozenset({"type", kind}), where)
        _string_field(part, kind, where)
    elif kind == "image_url":
        _check_item_fields(part, frozenset({"type", "image_url"}), where)
        image = _object_field(part, "image_url", where)
        _check_item_fields(image, frozenset({"url", "detail"}), f"{where}.image_url")
        _check_image(image, "url", f"{where}.image_url", settings)
        _check_switch(settings.allow_images, "images are", "ALLOW_IMAGES", where)
    elif kind == "input_audio":
        _check_item_fields(part, frozenset({"type", "input_audio"}), where)
        audio = _object_field(part, "input_audio", where)
        _check_item_fields(audio, frozenset({"data", "format"}), f"{where}.input_audio")
        _check_audio(audio, f"{where}.input_audio")
        _check_switch(settings.allow_audio, "audio is", "ALLOW_AUDIO", where)
    elif kind == "file":
        _check_item_fields(part, frozenset({"type", "file"}), where)
        file = _object_field(part, "file", where)
        _check_item_fields(file, frozenset({"file_data", "filename"}), f"{where}.file")
        _check_file(file, f"{where}.file")
        _check_switch(settings.allow_files, "files are", "ALLOW_FILES", where)
    else:
        kinds = "text, refusal, image_url, input_audio, file"
        raise invalid_request(f"{where}.type must be one of {kinds}", where)


def responses_input_chars(source: object, settings: Settings) -> int:
    """Check a Responses API `input` (a string, or allow-listed items and content parts with no
    reference to state kept at OpenAI) and return its size as `chat_messages_chars` does."""
    if isinstance(source, str):
        return len(source)
    for index, item in enumerate(source if isinstance(source, list) else []):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise invalid_request(f"{where} must be an object", where)
        kind = item.get("type", "message" if "role" in item else None)
        if isinstance(kind, str) and kind in REFUSED_ITEM_TYPES:
            reason = REFUSED_ITEM_TYPES[kind]
            raise invalid_request(
                f"{where}.type '{kind}' is not accepted: {reason}", f"{where}.type"
            )
        if not isinstance(kind, str) or kind not in RESPONSES_ITEM_FIELDS:
            kinds = _listed(RESPONSES_ITEM_FIELDS)
            raise invalid_request(f"{where}.type must be one of {kinds}", f"{where}.type")
        _check_item_fields(item, RESPONSES_ITEM_FIELDS[kind], where)
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in RESPONSES_ROLES:
                roles = _listed(RESPONSES_ROLES)
                raise invalid_request(f"{where}.role must be one of {roles}", f"{where}.role")
            _check_responses_content(item.get("content"), f"{where}.content", settings)
        elif kind == "function_call_output" and not isinstance(item.get("output"), str):
            _check_responses_content(item.get("output"), f"{where}.output", settings)
    return prompt_chars(source, settings)


def _check_responses_content(content: object, where: str, settings: Settings) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_request(f"{where} must be a string or a list of parts", where)
    for number, part in enumerate(content):
        check_responses_part(part, f"{where}[{number}]", settings)


def check_responses_part(part: object, where: str, settings: Settings) -> None:
    """One Responses API content part: an allow-listed type with allow-listed fields."""
    if not isinstance(part, dict):
        raise invalid_request(f"{where} must be an object", where)
    kind = part.get("type")
    if kind == "input_text":
        _check_item_fields(part, frozenset({"type", "text"}), where)
        _string_field(part, "text", where)
    elif kind == "output_text":
        _check_item_fields(part, frozenset({"type", "text", "annotations", "logprobs"}), where)
        _string_field(part, "text", where)
    elif kind == "refusal":
        _check_item_fields(part, frozenset({"type", "refusal"}), where)
        _string_field(part, "refusal", where)
    elif kind == "input_image":
        _check_item_fields(part, frozenset({"type", "image_url", "detail"}), where)
        _check_image(part, "image_url", where, settings)
        _check_switch(settings.allow_images, "images are", "ALLOW_IMAGES", where)
    elif kind == "input_file":
        _check_item_fields(part, frozenset({"type", "file_data", "filename"}), where)
        _check_file(part, where)
        _check_switch(settings.allow_files, "files are", "ALLOW_FILES", where)
    else:
        kinds = "input_text, output_text, refusal, input_image, input_file"
        raise invalid_request(f"{where}.type must be one of {kinds}", f"{where}.type")


def _check_item_fields(item: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    """Refuse a field outside `allowed`, naming it; a field that reaches stored state says so.
    A field set to null carries nothing (OpenAI's own answers, sent back as history, have
    `"audio": null`, `"function_call": null`)."""
    for name, value in item.items():
        if name in allowed or value is None:
            continue
        reason = STORED_STATE_FIELDS.get(name, "this relay does not accept it")
        raise invalid_request(f"{where}.{name} is not accepted: {reason}", f"{where}.{name}")


def _string_field(part: dict[str, Any], field: str, where: str) -> str:
    value = part.get(field)
    if not isinstance(value, str):
        raise invalid_request(f"{where}.{field} must be a string", f"{where}.{field}")
    return value


def _object_field(part: dict[str, Any], field: str, where: str) -> dict[str, Any]:
    value = part.get(field)
    if not isinstance(value, dict):
        raise invalid_request(f"{where}.{field} must be an object", f"{where}.{field}")
    return value


def _check_image(image: dict[str, Any], url_field: str, where: str, settings: Settings) -> None:
    url = _string_field(image, url_field, where)
    detail = image.get("detail", "auto")
    if not isinstance(detail, str) or detail not in IMAGE_DETAILS:
        details = _listed(IMAGE_DETAILS)
        raise invalid_request(f"{where}.detail must be one of {details}", f"{where}.detail")
    remote_allowed = settings.allow_image_urls and url.startswith("https://")
    if not url.startswith("data:image/") and not remote_allowed:
        raise invalid_request(
            f"{where}.{url_field} must be a data: URL: OpenAI would fetch any other URL "
            "(ALLOW_IMAGE_URLS=false; when true, https URLs pass)",
            f"{where}.{url_field}",
        )


def _check_file(file: dict[str, Any], where: str) -> None:
    data = _string_field(file, "file_data", where)
    if "filename" in file:
        _string_field(file, "filename", where)
    if not data.startswith("data:"):
        raise invalid_request(f"{where}.file_data must be a data: URL", f"{where}.file_data")


def _check_audio(audio: dict[str, Any], where: str) -> None:
    _string_field(audio, "data", where)
    if not isinstance(audio.get("format"), str) or audio["format"] not in AUDIO_FORMATS:
        formats = _listed(AUDIO_FORMATS)
        raise invalid_request(f"{where}.format must be one of {formats}", f"{where}.format")


def _check_switch(allowed: bool, what: str, setting: str, where: str) -> None:
    if not allowed:
        raise invalid_request(f"{where}: {what} not accepted here ({setting}=false)", where)


def image_tokens(model: str, detail: str) -> int:
    """What one image costs `model` at its worst, at `detail` (low, high or auto)."""
    name = model.removeprefix("ft:")  # a fine-tuned model costs what its base model costs
    high, low = next(
        ((high, low) for family, high, low in IMAGE_TOKENS if family.match(name)),
        UNKNOWN_MODEL_IMAGE_TOKENS,
    )
    return low if detail == "low" else high


# The field of each media part that carries the media itself (counted at the part's price).
MEDIA_PAYLOADS = {
    "image_url": "image_url",
    "input_image": "image_url",
    "file": "file",
    "input_file": "file_data",
    "input_audio": "input_audio",
}


def media_tokens(part: Mapping[str, Any], settings: Settings) -> int:
    """What a checked media part costs at its worst: an image at the dearest of the allowed
    models and its detail, a file or a sound by the length of its data."""
    kind = part.get("type")
    if kind in ("image_url", "input_image"):
        image = part.get("image_url") if kind == "image_url" else part
        detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
        return max(image_tokens(model, detail) for model in settings.model_allow_list)
    if kind in ("file", "input_file"):
        file = part.get("file") if kind == "file" else part
        data = file.get("file_data") if isinstance(file, dict) else None
        return FILE_TOKENS_PER_DATA_CHAR * len(data) if isinstance(data, str) else 0
    audio = part.get("input_audio")
    data = audio.get("data") if isinstance(audio, dict) else None
    return -(-len(data) // AUDIO_DATA_CHARS_PER_TOKEN) if isinstance(data, str) else 0


def content_parts(items: object) -> Iterable[dict[str, Any]]:
    """The content parts of a list of messages or input items (`content`, and a function call
    output's `output`): the only places a media part is priced as media."""
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            for key in ("content", "output"):
                parts = item.get(key)
                if isinstance(parts, list):
                    yield from (part for part in parts if isinstance(part, dict))


@dataclass(frozen=True)
class PromptCost:
    """What a prompt holds: its strings (in characters and in UTF-8 bytes), its media parts'
    tokens, and how many messages or input items."""

    chars: int
    utf8_bytes: int
    media_tokens: int
    messages: int


def prompt_cost(value: object, items: object, settings: Settings) -> PromptCost:
    """Walk a JSON value (iteratively, so a deep body cannot exhaust the stack): every string
    counts, except the media of a content part of `items` (the messages or input items in
    `value`), which counts at its price (`media_tokens`). Anywhere else a dict shaped like a
    media part is only strings, so it cannot lower what its strings count."""
    media, priced = 0, {}
    for part in content_parts(items):
        kind = part.get("type")
        payload = MEDIA_PAYLOADS.get(kind) if isinstance(kind, str) else None
        if payload is not None and payload in part:
            media += media_tokens(part, settings)
            priced[id(part)] = payload
    chars = utf8_bytes = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            chars += len(item)
            utf8_bytes += len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, dict):
            payload = priced.get(id(item))
            pending.extend(v for k, v in item.items() if k != payload)
        elif isinstance(item, list):
            pending.extend(item)
    messages = len(items) if isinstance(items, list) else 1
    return PromptCost(chars, utf8_bytes, media, messages)


def prompt_chars(value: object, settings: Settings) -> int:
    """The size a prompt counts against `MAX_PROMPT_CHARS`: its characters, plus each media
    part's tokens at `CHARS_PER_TOKEN`."""
    cost = prompt_cost(value, value, settings)
    return cost.chars + cost.media_tokens * CHARS_PER_TOKEN


def worst_case_tokens(params: Mapping[str, Any], settings: Settings) -> int:
    """What an upstream request may cost at most, reserved against the caller's budget when it
    is admitted (handler/quota.py): one token per UTF-8 byte of every string it sends (no token
    is shorter than a byte), media at its price, `TOKENS_PER_MESSAGE` per message or item, and
    its completion-token limit for each choice."""
    cost = prompt_cost(params, params.get("messages", params.get("input")), settings)
    limit = max(
        (
            value
            for name in ("max_completion_tokens", "max_tokens", "max_output_tokens")
            if isinstance(value := params.get(name), int)
        ),
        default=settings.max_tokens_cap,
    )
    choices = params.get("n") if isinstance(params.get("n"), int) and params["n"] > 1 else 1
    prompt = cost.utf8_bytes + cost.media_tokens + TOKENS_PER_MESSAGE * (cost.messages + 1)
    return prompt + limit * choices


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


# Tools a caller may declare or choose, by route: the caller runs them, so they cost no more
# than the tokens that describe them. Hosted tools (web search, file search, code interpreter,
# MCP, ...) are billed per call or read state kept at OpenAI.
CHAT_TOOL_TYPES = frozenset({"function", "custom"})
RESPONSES_TOOL_TYPES = frozenset({"function"})
TOOL_CHOICE_MODES = frozenset({"none", "auto", "required"})


def check_tools(body: Mapping[str, Any], tool_types: frozenset[str]) -> None:
    """`tools` and `tool_choice` name only tools of `tool_types`: a hosted tool is refused in
    either place, with the same reason."""
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_request("tools must be a list", "tools")
        for index, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if not isinstance(kind, str) or kind not in tool_types:
                raise _hosted_tool(kind, tool_types, f"tools[{index}]")
    choice = body.get("tool_choice")
    if choice is None or (isinstance(choice, str) and choice in TOOL_CHOICE_MODES):
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "allowed_tools":
        allowed = choice.get("allowed_tools", choice)  # Chat Completions nests it, Responses not
        listed = allowed.get("tools") if isinstance(allowed, dict) else None
        if not isinstance(listed, list):
            raise invalid_request("tool_choice.tools must be a list", "tool_choice")
        for tool in listed:
            named = tool.get("type") if isinstance(tool, dict) else None
            if not isinstance(named, str) or named not in tool_types:
                raise _hosted_tool(named, tool_types, "tool_choice")
    elif not isinstance(kind, str) or kind not in tool_types:
        raise _hosted_tool(kind, tool_types, "tool_choice")


def _hosted_tool(kind: object, tool_types: frozenset[str], param: str) -> RelayError:
    named = f"'{kind}'" if isinstance(kind, str) else "without a type"
    return invalid_request(
        f"{param}: a tool {named[:60]} is not accepted: only {_listed(tool_types)} tools, which "
        "the caller runs (hosted tools are billed per call)",
        param,
    )


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
