"""`POST /v1/responses`: OpenAI's Responses API under the relay's guards, streamed unchanged.

`responses_upstream_params` checks a body (field allow-list, model allow-list, output cap, size,
`store`); `ResponseEvents` forwards the upstream's SSE bytes as read while
watching for the terminal event and its usage; `ResponsesWire` ends a failed stream with an
`error` event in OpenAI's own shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from handler.errors import RelayError, error_payload, invalid_request
from handler.policy import (
    INSTRUCTION_ROLES,
    RESPONSES_TOOL_TYPES,
    capped_tokens,
    check_fields,
    check_model,
    check_prompt_size,
    check_temperature,
    check_tools,
    client_instructions_refused,
    responses_input_chars,
    stream_flag,
    string_chars,
)
from handler.relay import _broken_stream, _stream_failure, close_response
from handler.settings import Settings
from handler.sources import StreamSummary
from handler.sse import PassthroughWire

# What a caller may ask of the Responses API through the relay. Left out on purpose: anything
# that needs or reads state stored at OpenAI (`previous_response_id`, `conversation`, `prompt`,
# `background`; input items are allow-listed in handler/policy.py) or that costs more than the
# operator agreed to (`service_tier`, hosted tools, `max_tool_calls`), and `prompt_cache_key`
# (refused on every route: the relay chooses how requests share a cache). `user` and
# `safety_identifier` are accepted and replaced by the caller's identity.
RESPONSES_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "top_logprobs",
        "stream",
        "stream_options",
        "store",
        "include",
        "metadata",
        "text",
        "reasoning",
        "truncation",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
    }
)
# Events after which a Responses stream has nothing more to say.
TERMINAL_EVENTS = frozenset(
    {b"response.completed", b"response.incomplete", b"response.failed", b"error"}
)
_TEXT_DELTA = b"response.output_text.delta"


def _instructions(data: dict[str, Any], source: object, settings: Settings) -> str | None:
    """The instructions to send: the caller's only with `ALLOW_CLIENT_SYSTEM_PROMPT` (as for a
    system message on `/chat`), else `SYSTEM_PROMPT`. System and developer input items are
    instructions too, and refused the same way."""
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid_request("instructions must be a string", "instructions")
    if settings.allow_client_system_prompt:
        return instructions or settings.system_prompt or None
    if instructions is not None:
        raise client_instructions_refused("instructions")
    for index, item in enumerate(source if isinstance(source, list) else []):
        if item.get("role") in INSTRUCTION_ROLES:
            raise client_instructions_refused(f"input[{index}].role")
    return settings.system_prompt or None


def responses_upstream_params(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Apply the cost policy (handler/policy.py) to a Responses API body and build what goes
    upstream: allowed fields only, the system prompt rule, a capped `max_output_tokens`."""
    check_fields(data, RESPONSES_FIELDS, settings)
    source = data.get("input")
    if not (isinstance(source, str) and source) and not (isinstance(source, list) and source):
        raise invalid_request("input must be a non-empty string or list of items", "input")
    if isinstance(source, list) and not all(isinstance(item, dict) for item in source):
        raise invalid_request("every input item must be an object", "input")
    # Every string the caller sends is prompt: input items, instructions, tool definitions.
    chars = responses_input_chars(source, settings) + string_chars(data.get("instructions"))
    chars += string_chars(data.get("tools")) + string_chars(data.get("text"))
    check_prompt_size(chars, len(source) if isinstance(source, list) else 1, settings, "input")
    instructions = _instructions(data, source, settings)  # after the items' shapes are checked
    check_temperature(data.get("temperature"))
    store = data.get("store", False)
    if store is not False and not (store is True and settings.allow_store):
        raise invalid_request(
            "store is not allowed here: responses are not kept at OpenAI", "store"
        )
    check_tools(data, RESPONSES_TOOL_TYPES)
    # `user` and `safety_identifier` are replaced by the caller's identity (Upstream.open).
    params = dict(data)
    if instructions:
        params["instructions"] = instructions
    return {
        **params,
        "model": check_model(data.get("model"), settings),
        "stream": stream_flag(data),
        "store": store,
        # Always set: OpenAI's default is the model's own maximum, far over the relay's cap.
        "max_output_tokens": capped_tokens(
            data.get("max_output_tokens"), "max_output_tokens", settings
        ),
    }


class ResponseEvents:
    """The upstream's Responses SSE bytes, forwarded as read (a `StreamSource`).

    On the way it reads the event names (not the JSON of every event), so it can tell that the
    stream ended with a terminal event and keep that one event's data: its `response` carries
    the model and usage for the request log."""

    def __init__(self, response: aiohttp.ClientResponse, settings: Settings) -> None:
        self.response = response
        self._settings = settings
        self.deltas = 0
        self.model: str | None = None
        self.usage: dict | None = None
        self.ending: bytes | None = None
        self._pending = b""
        self._event = b""
        self._data: list[bytes] = []

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for raw in self.response.content.iter_any():
                self._scan(raw)
                yield raw
        except Exception as exc:
            raise _stream_failure(exc, self._settings) from exc
        self._scan(b"\n\n")
        if self.ending is None:
            raise _broken_stream("the model's stream ended before its last event")

    def close(self) -> None:
        close_response(self.response)

    def summary(self) -> StreamSummary:
        return StreamSummary(
            model=self.model, usage=self.usage, finish_reason=None, chunks=self.deltas
        )

    def _scan(self, raw: bytes) -> None:
        lines = (self._pending + raw if self._pending else raw).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if line[:6] == b"event:":
                self._event = line[6:].strip()
                if self._event == _TEXT_DELTA:
                    self.deltas += 1
            elif line[:5] == b"data:" and self._event in TERMINAL_EVENTS:
                self._data.append(line[5:])
            elif not line and self._event:
                if self._data:
                    self._end(self._event, b"\n".join(self._data))
                self._event, self._data = b"", []

    def _end(self, event: bytes, payload: bytes) -> None:
        self.ending = event
        try:
            response = orjson.loads(payload).get("response") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return
        self.model = response.get("model")
        self.usage = response.get("usage")


class ResponsesWire(PassthroughWire):
    """The upstream's events unchanged; a failure after the headers becomes an `error` event as
    OpenAI sends it mid-stream (`{"type": "error", "error": {...}}`), which the SDKs raise."""

    def error_frame(self, error: RelayError) -> bytes:
        event = {"type": "error", **error_payload(error, openai_style=True)}
        return b"\n\nevent: error\ndata: " + orjson.dumps(event) + b"\n\n"
