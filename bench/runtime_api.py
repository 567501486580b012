"""A minimal Lambda runtime-API emulator that times every response chunk as it arrives.

It hands queued events to `GET /runtime/invocation/next` and records what the runtime posts back:
a buffered JSON result, a streamed body (HTTP/1.1 chunks and trailers), or an error. One emulator
serves one runtime process; the benchmark measures there, as Lambda's side of the socket would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field

now = time.perf_counter
PRELUDE_END = b"\0" * 8
_ids = itertools.count(1)


@dataclass
class Invocation:
    """One event and the response the runtime gave it, with arrival times."""

    event: bytes
    request_id: str = field(default_factory=lambda: f"bench-{next(_ids):08d}")
    delivered_at: float | None = None  # when the event's last byte was written to the runtime
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    streamed: bool = False
    trailers: dict[str, str] = field(default_factory=dict)
    error: bytes | None = None
    done: asyncio.Future | None = None

    @property
    def raw(self) -> bytes:
        return b"".join(piece for _, piece in self.chunks)

    def body(self) -> tuple[dict, bytes]:
        """(prelude or buffered result without its body, response body) of a finished answer."""
        raw = self.raw
        if self.streamed:
            prelude, sep, body = raw.partition(PRELUDE_END)
            if not sep:
                return {}, raw
            return json.loads(prelude or b"{}"), body
        result = json.loads(raw)
        body = result.pop("body", "") or ""
        if result.get("isBase64Encoded"):
            import base64

            return result, base64.b64decode(body)
        return result, body.encode()

    def first_arrival_of(self, needle: bytes) -> float | None:
        """When the bytes `needle` had arrived in full (body or prelude alike)."""
        seen = b""
        for at, piece in self.chunks:
            seen = seen[-len(needle) :] + piece
            if needle in seen:
                return at
        return None


class RuntimeApiEmulator:
    """The runtime API (2018-06-01) on a loopback port, for one runtime process."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Invocation] = asyncio.Queue()
        self._by_id: dict[str, Invocation] = {}
        self.init_error: bytes | None = None
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> RuntimeApiEmulator:
        self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def invoke(self, event: bytes) -> Invocation:
        invocation = Invocation(event, done=asyncio.get_running_loop().create_future())
        self._by_id[invocation.request_id] = invocation
        self._queue.put_nowait(invocation)
        return invocation

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer) -> None:
        try:
            while await self._serve_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _serve_request(self, reader: asyncio.StreamReader, writer) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep_alive = headers.get("connection", "").lower() != "close"
        if method == "GET" and path.endswith("/runtime/invocation/next"):
            invocation = await self._queue.get()
            deadline_ms = int(time.time() * 1000) + 900_000
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(invocation.event)}\r\n"
                f"lambda-runtime-aws-request-id: {invocation.request_id}\r\n"
                f"lambda-runtime-deadline-ms: {deadline_ms}\r\n"
                "lambda-runtime-invoked-function-arn: "
                "arn:aws:lambda:us-east-1:123456789012:function:bench\r\n"
                "lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\n\r\n".encode()
                + invocation.event
            )
            await writer.drain()
            invocation.delivered_at = now()
            return keep_alive
        if method == "POST" and "/runtime/invocation/" in path:
            request_id = path.split("/runtime/invocation/")[1].split("/")[0]
            invocation = self._by_id.pop(request_id)
            if path.endswith("/error"):
                invocation.error = await self._read_body(reader, headers, invocation)
            else:
                invocation.streamed = (
                    headers.get("lambda-runtime-function-response-mode") == "streaming"
                )
                await self._read_body(reader, headers, invocation)
            await self._accepted(writer)
            invocation.done.set_result(now())
            return keep_alive
        if method == "POST" and path.endswith("/runtime/init/error"):
            self.init_error = await self._read_body(reader, headers, None)
            await self._accepted(writer)
            return keep_alive
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        return keep_alive

    async def _read_body(self, reader, headers: dict, invocation: Invocation | None) -> bytes:
        chunks = invocation.chunks if invocation is not None else []
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    break
                data = await reader.readexactly(size + 2)
                chunks.append((now(), data[:-2]))
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                if invocation is not None:
                    name, _, value = line.decode("latin-1").partition(":")
                    invocation.trailers[name.strip().lower()] = value.strip()
        else:
            data = await reader.readexactly(int(headers.get("content-length", "0")))
            chunks.append((now(), data))
        return b"".join(piece for _, piece in chunks)

    @staticmethod
    async def _accepted(writer) -> None:
        body = b'{"status":"OK"}'
        writer.write(
            b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
