"""What a stream source is: the written interface between the upstream side and the response.

`relay.ChatDeltas` (batches of text deltas, for /chat and /api/chat), `relay.PassthroughBytes`
(OpenAI's SSE bytes, for /v1/chat/completions) and `responses.ResponseEvents` (the Responses
API's SSE bytes) implement `StreamSource`; the wire formats (sse.py) and the streaming
response (streaming.py) read a source only through it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple, Protocol, TypeVar

Item = TypeVar("Item", covariant=True)


class StreamSummary(NamedTuple):
    """What a source learned by the end of its stream (or as far as it got).

    A NamedTuple rather than a dataclass for import time, as `errors.ErrorKind`."""

    model: str | None
    usage: dict | None
    finish_reason: str | None
    chunks: int
    # The completion text, only when LOG_PROMPTS=true and the source decodes text.
    completion: str | None = None
    # The tool calls the model made, complete, in order (`ChatDeltas` only).
    tool_calls: tuple[ToolCall, ...] = ()


class ToolCall(NamedTuple):
    """A tool call as the model made it: `arguments` is the JSON text it wrote, unchecked."""

    id: str
    name: str
    arguments: str


class ToolCallPiece(NamedTuple):
    """The next piece of a tool call's arguments as the model streams them; `first` marks the
    call's first piece, which announces its id and name."""

    id: str
    name: str
    arguments: str
    first: bool


class WithToolCalls(list):
    """A batch of `ChatDeltas` that holds `ToolCallPiece`s among its text deltas. Batches of
    text alone are plain lists, so a wire format tells them apart with one class check per
    batch, and text pays nothing for tools."""

    __slots__ = ()


class StreamSource(Protocol[Item]):
    """One upstream answer as an async iteration of items (a batch of text deltas, raw bytes).

    Iterating raises `RelayError` when the upstream fails; `close` drops the upstream
    connection at once (client gone, deadline); `summary` may be called at any time."""

    def __aiter__(self) -> AsyncIterator[Item]: ...

    def close(self) -> None: ...

    def summary(self) -> StreamSummary: ...
