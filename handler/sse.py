"""Wire formats of a streamed answer: SSE frames, plain text, and OpenAI passthrough.

Each `WireFormat` knows how its frames look, whether it can ping, and how a failure ends it.
A batch of `ChatDeltas` is a plain list of text, or a `WithToolCalls` list that also holds
tool-call pieces (handler/sources.py): one class check per batch picks the frames.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from handler.errors import RelayError, error_json
from handler.sources import StreamSource, ToolCall, ToolCallPiece

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
PING = b": ping\n\n"


def sse_delta_frames(batch: list[str]) -> bytes:
    """One `data: {"delta": ...}` frame per delta; the text is JSON-encoded, so it cannot
    break the framing whatever it contains."""
    if len(batch) == 1:
        return b'data: {"delta":' + orjson.dumps(batch[0]) + b"}\n\n"
    return b"".join([b'data: {"delta":' + orjson.dumps(text) + b"}\n\n" for text in batch])


def sse_tool_frames(batch: list[str | ToolCallPiece]) -> bytes:
    """A batch with tool calls in it: text as `data` frames, and each piece of a call's
    arguments as `event: tool_call` with the call's id, name and the piece as `delta`."""
    frames = []
    for item in batch:
        if item.__class__ is str:
            frames.append(b'data: {"delta":' + orjson.dumps(item) + b"}\n\n")
        else:
            piece = {"id": item.id, "name": item.name, "delta": item.arguments}
            frames.append(sse_event("tool_call", piece))
    return b"".join(frames)


def sse_complete_tool_call(call: ToolCall) -> bytes:
    """A tool call once it is complete: `arguments` is the model's whole JSON text."""
    return sse_event("tool_call", {"id": call.id, "name": call.name, "arguments": call.arguments})


def sse_event(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def sse_error_frame(error: RelayError) -> bytes:
    return b"event: error\ndata: " + error_json(error, openai_style=False) + b"\n\n"


class WireFormat:
    """How one response mode frames the stream."""

    media_type: str
    headers: dict[str, str] = {}
    ping: bytes | None = None

    def frames(self, source: StreamSource[Any]) -> AsyncIterator[bytes]:
        raise NotImplementedError

    def error_frame(self, error: RelayError) -> bytes | None:
        """The bytes that end a failed stream in-band, or None to abort the transfer."""
        return None


class SseWire(WireFormat):
    media_type = "text/event-stream; charset=utf-8"
    headers = SSE_HEADERS
    ping = PING

    async def frames(self, deltas: StreamSource[list[str]]) -> AsyncIterator[bytes]:
        async for batch in deltas:
            if batch.__class__ is list:
                yield sse_delta_frames(batch)
            else:
                yield sse_tool_frames(batch)
        summary = deltas.summary()
        yield b"".join(map(sse_complete_tool_call, summary.tool_calls)) + sse_event(
            "done",
            {
                "finish_reason": summary.finish_reason,
                "model": summary.model,
                "usage": summary.usage,
            },
        )

    def error_frame(self, error: RelayError) -> bytes:
        return sse_error_frame(error)


class TextWire(WireFormat):
    """The generated text itself; no in-band error signal, so a failure aborts the transfer."""

    media_type = "text/plain; charset=utf-8"
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}

    async def frames(self, deltas: StreamSource[list[str]]) -> AsyncIterator[bytes]:
        async for batch in deltas:
            if batch.__class__ is not list:  # no tools are offered here; text only
                batch = [item for item in batch if item.__class__ is str]
            yield "".join(batch).encode()


class PassthroughWire(WireFormat):
    """The upstream's own SSE bytes (`data: {chunk}` ... `data: [DONE]`), not re-encoded."""

    media_type = "text/event-stream; charset=utf-8"
    headers = SSE_HEADERS
    ping = PING

    def frames(self, chunks: StreamSource[bytes]) -> AsyncIterator[bytes]:
        return aiter(chunks)

    def error_frame(self, error: RelayError) -> bytes:
        # OpenAI's SDKs raise an APIError for a `data:` event carrying an `error` object.
        return b"\n\ndata: " + error_json(error, openai_style=True) + b"\n\n"
