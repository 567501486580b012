"""Wire formats of a streamed answer: SSE frames, plain text, and OpenAI passthrough.

Each `WireFormat` knows how its frames look, whether it can ping, and how a failure ends it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from handler.errors import RelayError, error_json
from handler.sources import StreamSource

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
PING = b": ping\n\n"


def sse_delta_frames(batch: list[str]) -> bytes:
    """One `data: {"delta": ...}` frame per delta; the text is JSON-encoded, so it cannot
    break the framing whatever it contains."""
    if len(batch) == 1:
        return b'data: {"delta":' + orjson.dumps(batch[0]) + b"}\n\n"
    return b"".join([b'data: {"delta":' + orjson.dumps(text) + b"}\n\n" for text in batch])


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
            yield sse_delta_frames(batch)
        summary = deltas.summary()
        yield sse_event(
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
