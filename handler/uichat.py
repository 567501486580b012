"""`POST /api/chat`: the Vercel AI SDK's `useChat` request and its UI message stream protocol.

The request's UI messages become a `/chat` body (so the same validation, caps and system prompt
rule apply); `UiMessageStreamWire` frames the same `ChatDeltas` as the AI SDK's SSE parts
(protocol `v1`, as read from the `ai` package 7.0.173, `src/ui-message-stream/`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from handler.errors import RelayError, error_json, invalid_request
from handler.sources import StreamSource
from handler.sse import PING, SSE_HEADERS, WireFormat

# The fields `DefaultChatTransport` sends, plus the `/chat` options a caller may add through the
# transport's `body` option. Anything else is refused, as on `/chat`.
TRANSPORT_FIELDS = frozenset({"id", "messages", "trigger", "messageId"})
CHAT_OPTIONS = frozenset({"model", "temperature", "max_tokens"})
# Parts that only decorate the UI: nothing in them is for the model to read.
DISPLAY_ONLY_PARTS = frozenset({"step-start", "reasoning", "source-url", "source-document"})

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
_TEXT_END = b'data: {"type":"text-end","id":"' + TEXT_ID.encode() + b'"}\n\n'
_DONE = b"data: [DONE]\n\n"


def chat_body_from_ui_messages(data: dict[str, Any]) -> dict[str, Any]:
    """The `/chat` body equivalent to a `useChat` request: the text of each UI message.

    Text parts are joined; display-only parts are skipped; parts the relay cannot pass on as
    text (files, tool calls, data parts) are refused rather than silently dropped, so a caller
    never gets an answer to a question the model did not see in full."""
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
        text = _message_text(message["parts"], where)
        if role == "assistant" and not text:
            continue  # an answer that failed before its first word: nothing to remember
        messages.append({"role": role, "content": text})
    body: dict[str, Any] = {"messages": messages}
    body.update((name, data[name]) for name in CHAT_OPTIONS if name in data)
    return body


def _message_text(parts: list, where: str) -> str:
    texts = []
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind not in DISPLAY_ONLY_PARTS:
            param = f"{where}.parts.{index}"
            raise invalid_request(f"{param}: only text parts can be sent ({kind!r} given)", param)
    return "".join(texts)


def text_delta_frames(batch: list[str]) -> bytes:
    """One `text-delta` part per upstream delta; the text is JSON-encoded, so it cannot break
    the framing. This is the per-token path: a constant prefix and one `orjson.dumps`."""
    if len(batch) == 1:
        return _DELTA_PREFIX + orjson.dumps(batch[0]) + b"}\n\n"
    return b"".join([_DELTA_PREFIX + orjson.dumps(text) + b"}\n\n" for text in batch])


def ui_part(part: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(part) + b"\n\n"


class UiMessageStreamWire(WireFormat):
    """The AI SDK's UI message stream: `start`, `text-start`, `text-delta`..., `text-end`,
    `finish` (with the model and usage as message metadata), then `data: [DONE]`.

    The `start` and `text-start` parts travel with the first text, so the stream's first frame
    still waits for the model and an early failure keeps its HTTP status. A failure after the
    headers ends the stream with an `error` part, whose `errorText` is the same JSON error object
    an HTTP error carries, so a client reads both the same way."""

    media_type = "text/event-stream; charset=utf-8"
    headers = {**SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
    ping = PING

    def __init__(self, message_id: str) -> None:
        # The answer's id is the relay's request id, so a message in the UI leads to its log line.
        self._start = ui_part({"type": "start", "messageId": message_id})

    async def frames(self, deltas: StreamSource[list[str]]) -> AsyncIterator[bytes]:
        started = False
        async for batch in deltas:
            if not started:
                started = True
                yield (
                    self._start
                    + ui_part({"type": "text-start", "id": TEXT_ID})
                    + text_delta_frames(batch)
                )
            else:
                yield text_delta_frames(batch)
        ending = _TEXT_END if started else self._start
        summary = deltas.summary()
        finish = {
            "type": "finish",
            "finishReason": FINISH_REASONS.get(summary.finish_reason, "other"),
            "messageMetadata": {"model": summary.model, "usage": summary.usage},
        }
        yield ending + ui_part(finish) + _DONE

    def error_frame(self, error: RelayError) -> bytes:
        text = error_json(error, openai_style=False).decode()
        return ui_part({"type": "error", "errorText": text}) + _DONE
