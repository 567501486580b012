"""The streaming response: pings before the first token, client disconnects, deadlines.

`start_stream` waits briefly for the first frame so that early failures still get a proper HTTP
status; `RelayStreamResponse` then writes every frame the moment it exists and ends the stream
with exactly one terminal frame. All of this lives here, not in the routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from handler.errors import UPSTREAM_TIMEOUT, RelayError, upstream_timeout
from handler.requestlog import RequestLog
from handler.sources import StreamSource
from handler.sse import WireFormat

_END = object()


class StreamFailed(Exception):
    """Raised to abort a transfer that has no in-band error signal (plain text)."""


async def start_stream(
    wire: WireFormat,
    source: StreamSource[Any],
    *,
    record: RequestLog,
    timeout_s: float,
    ping_interval_s: float,
    deadline_margin_s: float,
) -> RelayStreamResponse:
    """`source` framed by `wire`: waits for the first frame, up to the first ping (or the timeout
    when the format cannot ping). Failures in that window raise `RelayError` for an HTTP status."""
    started = time.monotonic()
    frames = wire.frames(source)
    first = asyncio.ensure_future(anext(frames, _END))
    wait_s = min(ping_interval_s, timeout_s) if wire.ping else timeout_s
    try:
        await asyncio.wait({first}, timeout=wait_s)
    except BaseException:
        first.cancel()
        await _finish(first, source)
        raise
    if first.done() and first.exception() is not None:
        source.close()
        raise first.exception()
    if not first.done() and wait_s >= timeout_s:
        first.cancel()
        await _finish(first, source)
        raise upstream_timeout(timeout_s)
    return RelayStreamResponse(
        first=first,
        frames=frames,
        source=source,
        wire=wire,
        record=record,
        first_token_deadline=started + timeout_s,
        timeout_s=timeout_s,
        ping_interval_s=ping_interval_s,
        deadline_margin_s=deadline_margin_s,
    )


async def _finish(task: asyncio.Future, source: StreamSource[Any]) -> None:
    try:
        await task
    except BaseException:
        pass
    source.close()


class RelayStreamResponse(StreamingResponse):
    """Writes frames as they come; a client hang-up closes the upstream at once.

    Starlette's `StreamingResponse` sets the status and headers (no Content-Length: the body is
    open-ended, so the server frames it as chunked); `__call__` is ours, for the pings, the
    disconnect watch, the deadline and the one terminal frame."""

    def __init__(
        self,
        *,
        first: asyncio.Future,
        frames: AsyncIterator[bytes],
        source: StreamSource[Any],
        wire: WireFormat,
        record: RequestLog,
        first_token_deadline: float,
        timeout_s: float,
        ping_interval_s: float,
        deadline_margin_s: float,
    ) -> None:
        super().__init__(frames, headers=wire.headers, media_type=wire.media_type)
        self._first = first
        self._frames = frames
        self._source = source
        self._wire = wire
        self._record = record
        self._first_token_deadline = first_token_deadline
        self._timeout_s = timeout_s
        self._ping_interval_s = ping_interval_s
        self._deadline_margin_s = deadline_margin_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        record = self._record
        # Servers that support ASGI trailers (the native Lambda runtime) learn of a failure
        # that happened after the headers, and end the stream with Lambda's error trailers.
        trailers = "http.response.trailers" in scope.get("extensions", ())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": self.raw_headers,
                "trailers": trailers,
            }
        )
        first_sent = False
        if self._first.done() and self._first.result() is not _END:
            # The usual case: the first frame came while the route waited. Sent from here, it
            # leaves now rather than one event-loop turn later from the writer task.
            record.mark_first_token()
            message = {
                "type": "http.response.body",
                "body": self._first.result(),
                "more_body": True,
            }
            try:
                await send(message)
            except BaseException:
                self._source.close()
                raise
            first_sent = True
        body = asyncio.ensure_future(self._write_frames(send, first_sent))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        failure: RelayError | None = None
        try:
            done, _ = await asyncio.wait(
                {body, watcher},
                timeout=invocation_time_left(scope, self._deadline_margin_s),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if body in done:
                failure = body.result()
            elif watcher in done:
                record.outcome = "client_disconnected"
                body.cancel()
            else:
                # The invocation's deadline is near: end cleanly before Lambda cuts us off.
                body.cancel()
                failure = RelayError(
                    UPSTREAM_TIMEOUT, "the answer was cut short by the function's time limit"
                )
        finally:
            watcher.cancel()
            if not body.done():
                body.cancel()
            await _finish(body, self._source)
            if not self._first.done():
                self._first.cancel()
            summary = self._source.summary()
            record.chunks = summary.chunks
            record.usage = summary.usage
            record.model = summary.model or record.model
            if summary.completion is not None:
                record.completion = summary.completion
        if record.outcome == "client_disconnected":
            return
        if failure is not None:
            record.outcome = failure.outcome
            record.error_type = failure.type
            ending = self._wire.error_frame(failure)
            if ending is None:
                raise StreamFailed(failure.type)
            await send({"type": "http.response.body", "body": ending, "more_body": False})
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        if trailers:
            error = [(b"relay-error-type", failure.type.encode())] if failure else []
            await send({"type": "http.response.trailers", "headers": error, "more_trailers": False})

    async def _write_frames(
        self, send: Callable[[dict], Awaitable[None]], first_sent: bool
    ) -> RelayError | None:
        """Every frame as its own body message; returns the failure that ended the stream.

        `first_sent` says whether `__call__` already wrote the first frame: deciding it here from
        `self._first.done()` would drop a first frame that arrived in between."""
        try:
            if not first_sent:
                first = await self._wait_for_first_frame(send)
                if first is _END:
                    return None
                self._record.mark_first_token()
                await send({"type": "http.response.body", "body": first, "more_body": True})
            async for frame in self._frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        except RelayError as exc:
            return exc
        return None

    async def _wait_for_first_frame(self, send: Callable) -> bytes | object:
        """A ping every `ping_interval_s` until the first frame, or the first-token deadline.

        Both are judged by the clock, not by the wakeups: uvloop rounds a timer to whole
        milliseconds, so a wait can end up to half a millisecond early, and below that at once."""
        first = self._first
        deadline = self._first_token_deadline
        next_ping = time.monotonic() + self._ping_interval_s
        while not first.done():
            now = time.monotonic()
            if now >= deadline:
                first.cancel()
                raise upstream_timeout(self._timeout_s)
            if now >= next_ping:
                await send(
                    {"type": "http.response.body", "body": self._wire.ping, "more_body": True}
                )
                next_ping = now + self._ping_interval_s
            await asyncio.wait({first}, timeout=min(next_ping, deadline) - now)
        return first.result()


async def _wait_for_disconnect(receive: Callable) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def invocation_time_left(scope: dict, margin_s: float) -> float | None:
    """Seconds until the Lambda invocation must end, less a margin; None off Lambda.

    The deadline comes from the context (native runtime, Mangum) or, behind the Lambda Web
    Adapter, from its `x-amzn-lambda-context` request header."""
    context = scope.get("aws.context")
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is not None:
        return max(remaining() / 1000 - margin_s, 0.0)
    for name, value in scope.get("headers", ()):
        if name == b"x-amzn-lambda-context":
            try:
                deadline_ms = orjson.loads(value)["deadline"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return None
            if type(deadline_ms) not in (int, float):  # a string, a list, true: unreadable
                return None
            return max(deadline_ms / 1000 - time.time() - margin_s, 0.0)
    return None
