"""The transport of the native runtime: HTTP/1.1 to the Lambda runtime API (2018-06-01).

`RuntimeApi` polls `/next` and posts buffered answers on one kept-alive connection (one per
poller); `StreamedResponse` is one streamed invocation response on a connection of its own,
written chunk by chunk, which also notices when Lambda closes that connection early.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import orjson

API_VERSION = "2018-06-01"
STREAM_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
CRLF = b"\r\n"
STREAM_HEADERS = {
    "Lambda-Runtime-Function-Response-Mode": "streaming",
    "Transfer-Encoding": "chunked",
    "Content-Type": STREAM_CONTENT_TYPE,
    "Trailer": "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
}


class RuntimeApi:
    """HTTP/1.1 to the runtime API: a kept-alive connection for `/next` and buffered posts,
    a fresh one for each streamed response (closed once Lambda has acknowledged it).

    One instance per poller: a poller waits on its `/next` with the connection to itself."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def request_head(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        lines = [f"{method} /{API_VERSION}{path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await self._connection()
        head = {"Content-Length": str(len(body)), **(headers or {})}
        writer.write(self.request_head(method, path, head) + body)
        try:
            return await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            self._writer = None
            raise

    async def next_invocation(self) -> tuple[dict[str, str], bytes]:
        status, headers, body = await self.request("GET", "/runtime/invocation/next")
        if status != 200:
            raise RuntimeError(f"runtime API answered {status} to /next")
        return headers, body

    async def post_json(self, path: str, payload: Any, headers: dict | None = None) -> None:
        content = {"Content-Type": "application/json", **(headers or {})}
        await self.request("POST", path, orjson.dumps(payload), content)

    def connect(self, on_hang_up: Callable[[], None]) -> asyncio.Task:
        """A fresh connection for a streamed response, opened in the background: the app's
        own work (the upstream call) hides the connect from the time to first byte.
        `on_hang_up` is called if Lambda closes it before the response is finished."""
        return asyncio.ensure_future(self._open(on_hang_up))

    async def _open(self, on_hang_up: Callable[[], None]) -> StreamedResponse:
        loop = asyncio.get_running_loop()
        _, stream = await loop.create_connection(
            lambda: StreamedResponse(on_hang_up), self.host, self.port
        )
        return stream

    async def open_stream(self, request_id: str, connecting: asyncio.Task) -> StreamedResponse:
        stream = await connecting
        if stream.lost:
            # Closed while idle, before the response began: nobody has been answered yet, so
            # this is no hang-up; the response goes out on a new connection.
            stream = await self._open(stream.on_hang_up)
        path = f"/runtime/invocation/{request_id}/response"
        stream.start(self.request_head("POST", path, STREAM_HEADERS))
        return stream


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split(" ", 2)[1]), headers, body


class StreamedResponse(asyncio.Protocol):
    """One streamed invocation response: a chunked POST body, written as the app sends it.

    A protocol rather than a stream pair so that the connection is watched while the body is
    being written: if Lambda closes it (or answers) before the last chunk, the caller has gone
    and `on_hang_up` tells the app at once, instead of after the response has run its course."""

    _HIGH_WATER = 64 * 1024  # wait for the socket only when this much is queued

    def __init__(self, on_hang_up: Callable[[], None]) -> None:
        self.on_hang_up = on_hang_up
        self._transport: asyncio.WriteTransport | None = None
        self._received = bytearray()
        self._answered: asyncio.Future | None = None
        self._writable: asyncio.Future | None = None
        self._started = False  # the request head is out: from now on a close is a hang-up
        self._finishing = False
        self.lost = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=self._HIGH_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._received += data
        if self._answer_complete():
            if self._answered is not None and not self._answered.done():
                self._answered.set_result(None)
            else:
                self._hang_up()  # Lambda answered before the body ended: it takes no more

    def eof_received(self) -> bool:
        self._hang_up()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._hang_up()
        self.lost = True
        for waiter in (self._writable, self._answered):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # The response

    def close(self) -> None:
        """Close a connection that no response was written to."""
        self.lost = True
        self._transport.close()

    def start(self, head: bytes) -> None:
        self._started = True
        self._transport.write(head)

    async def write(self, data: bytes) -> None:
        """One HTTP chunk per call, straight to the socket; wait only if the socket is behind."""
        if data and not self.lost:
            self._transport.writelines((b"%x\r\n" % len(data), data, CRLF))
            if self._writable is not None:
                await self._writable

    async def finish(self, error_type: str | None = None, error: dict | None = None) -> None:
        """The zero-length chunk (with Lambda's error trailers if it failed), then close once
        Lambda has acknowledged the response. Nothing to do if Lambda already hung up."""
        if self.lost or self._transport.is_closing():
            return
        self._finishing = True
        ending = b"0\r\n"
        if error_type is not None:
            encoded = base64.b64encode(orjson.dumps(error)).decode()
            ending += (
                f"Lambda-Runtime-Function-Error-Type: {error_type}\r\n"
                f"Lambda-Runtime-Function-Error-Body: {encoded}\r\n"
            ).encode()
        self._answered = asyncio.get_running_loop().create_future()
        if self._answer_complete():
            self._answered.set_result(None)
        self._transport.write(ending + CRLF)
        try:
            await self._answered
        finally:
            self._transport.close()

    def _answer_complete(self) -> bool:
        head_end = self._received.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        length = 0
        for line in bytes(self._received[:head_end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or b"0")
        return len(self._received) >= head_end + 4 + length

    def _hang_up(self) -> None:
        """The connection closed or was answered early; a hang-up only while the response is
        being written (before it began nobody was answered; after the last chunk, it is done)."""
        if self.lost:
            return
        self.lost = True
        self._transport.close()  # Lambda takes no more of this response
        if self._started and not self._finishing:
            self.on_hang_up()
