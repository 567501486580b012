"""`POST /api/chat`: the Vercel AI SDK's `useChat` request and its UI message stream protocol.

The request's UI messages become a `/chat` body (so the same validation, caps, system prompt
rule and tools apply); `UiMessageStreamWire` frames the same `ChatDeltas` as the AI SDK's SSE
parts (protocol `v1`, as read from the `ai` package 7.0.173, `src/ui-message-stream/` and
`src/ui/process-ui-message-stream.ts`), tool calls included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from handler.errors import RelayError, error_json, invalid_request
from handler.sources import StreamSource, ToolCall, ToolCallPiece
from handler.sse import PING, SSE_HEADERS, WireFormat

# The fields `DefaultChatTransport` sends, plus the `/chat` options a caller may add through the
# transport's `body` option. Anything else is refused, as on `/chat`.
TRANSPORT_FIELDS = frozenset({"id", "messages", "trigger", "messageId"})
CHAT_OPTIONS = frozenset({"model", "temperature", "max_tokens", "tools"})
UI_ROLES = frozenset({"system", "user", "assistant"})
# Parts that only decorate the UI: nothing in them is for the model to read. (In an assistant
# message `step-start` also ends a step: see `_assistant_messages`.)
DISPLAY_ONLY_PARTS = frozenset({"step-start", "reasoning", "source-url", "source-document"})
# The states of a tool part whose call has an answer for the model.
ANSWERED_TOOL_STATES = frozenset({"output-available", "output-error"})

# Chat Completions' finish reasons in the AI SDK's spelling; anything new is `other`.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
}

# One text part per answer, so its id need not be unique beyond the message.
TEXT_ID = "text-0"
_DELTA_PREFIX = b'data: {"type":"text-delta","id":"' + TEXT_ID.encode() + b'","delta":'
_TEXT_START = b'data: {"type":"text-start","id":"' + TEXT_ID.encode() + b'"}\n\n'
_TEXT_END = b'data: {"type":"text-end","id":"' + TEXT_ID.encode() + b'"}\n\n'
_START_STEP = b'data: {"type":"start-step"}\n\n'
_FINISH_STEP = b'data: {"type":"finish-step"}\n\n'
_DONE = b"data: [DONE]\n\n"


def chat_body_from_ui_messages(data: dict[str, Any]) -> dict[str, Any]:
    """The `/chat` body equivalent to a `useChat` request: the text of each UI message, and the
    tool calls and results of the assistant's (`_assistant_messages`).

    Text parts are joined; display-only parts are skipped; parts the relay cannot pass on
    (files, data parts) are refused rather than silently dropped, so a caller never gets an
    answer to a question the model did not see in full."""
    unknown = sorted(set(data) - TRANSPORT_FIELDS - CHAT_OPTIONS)
    if unknown:
        raise invalid_request(f"{unknown[0]}: unknown field", unknown[0])
    ui_messages = data.get("messages")
    if not isinstance(ui_messages, list) or not ui_messages:
        raise invalid_request("messages must be a non-empty list of UI messages", "messages")
    messages = []
    for index, message in enumerate(ui_messages):
        where = f"messages.{index}"
        if not isinstance(message, dict) or not isinstance(message.get("parts"), list):
            raise invalid_request(f"{where}: a UI message needs a list of parts", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in UI_ROLES:
            roles = ", ".join(sorted(UI_ROLES))
            raise invalid_request(f"{where}.role: must be one of {roles}", f"{where}.role")
        if role == "assistant":
            messages += _assistant_messages(message["parts"], where)
        else:
            messages.append({"role": role, "content": _message_text(message["parts"], where)})
    body: dict[str, Any] = {"messages": messages}
    body.update((name, data[name]) for name in CHAT_OPTIONS if name in data)
    return body


def response_message_id(data: dict[str, Any], request_id: str) -> str:
    """The id of the answer's UI message: `msg-` and the relay's request id, so a message in
    the UI leads to its log line; but a request whose last message is the assistant's (tool
    results going back) continues that message, under its id, as the AI SDK's own servers do
    (`getResponseUIMessageId`): a new id would make the chat show a second message."""
    messages = data.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("role") == "assistant":
        message_id = last.get("id")
        if isinstance(message_id, str) and message_id:
            return message_id
    return f"msg-{request_id}"


def _message_text(parts: list, where: str) -> str:
    texts = []
    for index, part in enumerate(parts):
        kind = _part_type(part)
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind not in DISPLAY_ONLY_PARTS:
            param = f"{where}.parts.{index}"
            raise invalid_request(f"{param}: only text parts can be sent ({kind!r} given)", param)
    return "".join(texts)


def _part_type(part: object) -> str | None:
    kind = part.get("type") if isinstance(part, dict) else None
    return kind if isinstance(kind, str) else None


def _assistant_messages(parts: list, where: str) -> list[dict[str, Any]]:
    """An assistant UI message as Chat Completions messages: one assistant message per step
    (the parts between two `step-start`s), with its text and its tool calls, each step's calls
    followed by their results as `tool` messages, as the AI SDK's `convertToModelMessages`
    orders them. A call still streaming when its answer broke off is left out; one that is
    complete but has no output yet cannot be answered by the model, and is refused."""
    messages: list[dict[str, Any]] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def end_step() -> None:
        text = "".join(texts)
        if calls:
            message: dict[str, Any] = {"role": "assistant", "tool_calls": calls[:]}
            if text:
                message["content"] = text
            messages.append(message)
            messages.extend(results)
        elif text:  # an answer that failed before its first word: nothing to remember
            messages.append({"role": "assistant", "content": text})
        texts.clear(), calls.clear(), results.clear()

    for index, part in enumerate(parts):
        kind = _part_type(part)
        param = f"{where}.parts.{index}"
        if kind == "step-start":
            end_step()
        elif kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind is not None and (kind.startswith("tool-") or kind == "dynamic-tool"):
            call = _tool_call_and_result(part, kind, param)
            if call is not None:
                calls.append(call[0])
                results.append(call[1])
        elif kind not in DISPLAY_ONLY_PARTS:
            raise invalid_request(f"{param}: this part cannot be sent ({kind!r} given)", param)
    end_step()
    return messages


def _tool_call_and_result(
    part: dict[str, Any], kind: str, param: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A tool part as the assistant's call and the `tool` message with its output."""
    name = part.get("toolName") if kind == "dynamic-tool" else kind[len("tool-") :]
    call_id = part.get("toolCallId")
    if not (isinstance(name, str) and name and isinstance(call_id, str) and call_id):
        raise invalid_request(f"{param}: a tool part needs its tool name and toolCallId", param)
    state = part.get("state")
    if state == "input-streaming":
        return None
    if not isinstance(state, str) or state not in ANSWERED_TOOL_STATES:
        raise invalid_request(
            f"{param}: the tool call {call_id} has no output yet (state {state!r}): "
            "add it with addToolOutput before sending",
            param,
        )
    arguments = part.get("input")
    if arguments is None and state == "output-error":
        arguments = part.get("rawInput")
    output = part.get("errorText") if state == "output-error" else part.get("output")
    function = {"name": name, "arguments": _json_text(arguments, {}, param)}
    call = {"id": call_id, "type": "function", "function": function}
    content = output if isinstance(output, str) else _json_text(output, None, param)
    return call, {"role": "tool", "tool_call_id": call_id, "content": content}


def _json_text(value: object, missing: object, param: str) -> str:
    try:
        return orjson.dumps(missing if value is None else value).decode()
    except TypeError:  # nesting orjson cannot write, an integer beyond 64 bits
        raise invalid_request(f"{param}: a tool input or output cannot be encoded", param) from None


def text_delta_frames(batch: list[str]) -> bytes:
    """One `text-delta` part per upstream delta; the text is JSON-encoded, so it cannot break
    the framing. This is the per-token path: a constant prefix and one `orjson.dumps`."""
    if len(batch) == 1:
        return _DELTA_PREFIX + orjson.dumps(batch[0]) + b"}\n\n"
    return b"".join([_DELTA_PREFIX + orjson.dumps(text) + b"}\n\n" for text in batch])


def ui_part(part: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(part) + b"\n\n"


class UiMessageStreamWire(WireFormat):
    """The AI SDK's UI message stream: `start`, `start-step`, `text-start`, `text-delta`...,
    `text-end`, tool calls (`tool-input-start`, `tool-input-delta`..., then
    `tool-input-available`, or `tool-input-error` for arguments that are not JSON),
    `finish-step`, `finish` (with the model and usage as message metadata), `data: [DONE]`.

    The `start` and `start-step` parts travel with the first text or tool call, so the stream's
    first frame still waits for the model and an early failure keeps its HTTP status. A failure
    after the headers ends the stream with an `error` part, whose `errorText` is the same JSON
    error object an HTTP error carries, so a client reads both the same way. One step per
    response: the caller's chat runs the tools and sends the next request."""

    media_type = "text/event-stream; charset=utf-8"
    headers = {**SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
    ping = PING

    def __init__(self, message_id: str) -> None:
        # The answer's id: see `response_message_id`.
        self._start = ui_part({"type": "start", "messageId": message_id})

    async def frames(self, deltas: StreamSource[list[str]]) -> AsyncIterator[bytes]:
        opening = self._start + _START_STEP  # sent with the first part, then empty
        text_open = False
        async for batch in deltas:
            if text_open and batch.__class__ is list:
                yield text_delta_frames(batch)
                continue
            frames, text_open = _opening_or_tool_frames(batch, text_open)
            yield opening + frames
            opening = b""
        summary = deltas.summary()
        finish = {
            "type": "finish",
            "finishReason": FINISH_REASONS.get(summary.finish_reason, "other"),
            "messageMetadata": {"model": summary.model, "usage": summary.usage},
        }
        yield b"".join(
            [
                opening,
                _TEXT_END if text_open else b"",
                *map(tool_input_ready, summary.tool_calls),
                _FINISH_STEP,
                ui_part(finish),
                _DONE,
            ]
        )

    def error_frame(self, error: RelayError) -> bytes:
        text = error_json(error, openai_style=False).decode()
        return ui_part({"type": "error", "errorText": text}) + _DONE


def _opening_or_tool_frames(batch: list, text_open: bool) -> tuple[bytes, bool]:
    """The parts of a batch that opens the text or holds tool-call pieces; returns them and
    whether a text part is open after them (a tool call closes it)."""
    frames = []
    for item in batch:
        if item.__class__ is str:
            if not text_open:
                frames.append(_TEXT_START)
                text_open = True
            frames.append(text_delta_frames([item]))
            continue
        piece: ToolCallPiece = item
        if text_open:
            frames.append(_TEXT_END)
            text_open = False
        if piece.first:
            start = {"type": "tool-input-start", "toolCallId": piece.id, "toolName": piece.name}
            frames.append(ui_part(start))
        if piece.arguments:
            delta = {"type": "tool-input-delta", "toolCallId": piece.id}
            frames.append(ui_part({**delta, "inputTextDelta": piece.arguments}))
    return b"".join(frames), text_open


def tool_input_ready(call: ToolCall) -> bytes:
    """A complete call: `tool-input-available` with its parsed input (`useChat` then runs
    `onToolCall`), or `tool-input-error` when the model's arguments are not JSON, so the
    chat shows the failure and can send it back to the model instead of breaking."""
    try:
        parsed = orjson.loads(call.arguments) if call.arguments.strip() else {}
    except orjson.JSONDecodeError as exc:
        part = {
            "type": "tool-input-error",
            "toolCallId": call.id,
            "toolName": call.name,
            "input": call.arguments,
            "errorText": f"the model's arguments for {call.name} are not valid JSON ({exc})",
        }
        return ui_part(part)
    part = {"type": "tool-input-available", "toolCallId": call.id, "toolName": call.name}
    return ui_part({**part, "input": parsed})
