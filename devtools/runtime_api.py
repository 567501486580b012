"""A Lambda runtime API (2018-06-01) emulator on loopback, recording every byte a runtime sends.

It hands queued events to `GET /runtime/invocation/next` with realistic headers, and records each
response POST: request headers, every HTTP chunk with its arrival time, the zero chunk, trailers,
and whether the runtime closed the connection afterwards; `/error` and `/init/error` posts too,
and SnapStart's `/restore/next` (held until `restore()`) and `/restore/error`.
Used by the tests, `make invoke` and the benchmarks.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from devtools.loopback import LoopbackHttpServer, ServerThread, read_request_head

PRELUDE_END = b"\0" * 8
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:relay"
_ids = itertools.count(1)


@dataclass
class Invocation:
    """One event handed out, and everything the runtime answered to it."""

    event: bytes
    deadline_ms: int
    request_id: str = field(default_factory=lambda: f"8f1b2c3d-0000-4000-8000-{next(_ids):012d}")
    trace_id: str = "Root=1-67891234-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1"
    delivered_at: float | None = None
    kind: str | None = None  # "response" or "error"
    request_headers: dict[str, str] = field(default_factory=dict)
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    zero_chunk: bool = False
    trailers: dict[str, str] = field(default_factory=dict)
    connection_closed: bool = False
    hang_up_after_chunks: int | None = None  # close the response connection after this many
    hung_up_at: float | None = None  # when the emulator closed it (as Lambda does on a hang-up)
    # When given, a streamed response's body is not read until this is set: a slow reader.
    read_gate: threading.Event | None = None
    acknowledge: bool = True  # False: close the connection after the body instead of a 202
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def raw(self) -> bytes:
        return b"".join(piece for _, piece in self.chunks)

    @property
    def streamed(self) -> bool:
        return self.request_headers.get("lambda-runtime-function-response-mode") == "streaming"

    def prelude_and_body(self) -> tuple[dict, bytes]:
        """A streamed answer's prelude JSON and body, split at the eight NULs."""
        prelude, separator, body = self.raw.partition(PRELUDE_END)
        assert separator, "no eight-NUL separator after the prelude"
        return json.loads(prelude), body

    def buffered_result(self) -> dict:
        return json.loads(self.raw)

    def first_arrival_of(self, needle: bytes) -> float | None:
        """When the bytes `needle` had fully arrived, prelude or body alike."""
        seen = b""
        for at, piece in self.chunks:
            seen = seen[-len(needle) :] + piece
            if needle in seen:
                return at
        return None

    def error_trailer_body(self) -> dict:
        return json.loads(base64.b64decode(self.trailers["lambda-runtime-function-error-body"]))

    def wait(self, timeout: float = 15) -> Invocation:
        assert self.done.wait(timeout), "the runtime did not answer in time"
        return self


class ArrivalTimedReader(asyncio.StreamReader):
    """A StreamReader that remembers when its bytes arrived, so that a chunk is stamped with the
    time it came off the socket, as a client's `data_received` would see it, not with the time
    the emulator got round to parsing it."""

    def __init__(self) -> None:
        super().__init__()
        self.consumed = 0  # bytes handed out by the read methods so far
        self._fed = 0
        self._arrivals: deque[tuple[int, float]] = deque()  # (bytes fed in total, when)

    def feed_data(self, data: bytes) -> None:
        self._fed += len(data)
        self._arrivals.append((self._fed, time.monotonic()))
        super().feed_data(data)

    def arrival(self) -> float:
        """When the last byte handed out so far had arrived."""
        while len(self._arrivals) > 1 and self._arrivals[0][0] < self.consumed:
            self._arrivals.popleft()
        return self._arrivals[0][1] if self._arrivals else time.monotonic()

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        data = await super().readuntil(separator)
        self.consumed += len(data)
        return data

    async def readexactly(self, n: int) -> bytes:
        data = await super().readexactly(n)
        self.consumed += len(data)
        return data

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        self.consumed += len(data)
        return data


def _arrived(reader: asyncio.StreamReader) -> float:
    return reader.arrival() if isinstance(reader, ArrivalTimedReader) else time.monotonic()


class RuntimeApiEmulator(LoopbackHttpServer):
    """The server side of the runtime API; run it with `ThreadedRuntimeApi` from a sync test."""

    def __init__(self) -> None:
        # Close a connection on which no request came for this long (a server's idle timeout).
        super().__init__()
        self.idle_close_s: float | None = None
        self.idle_closes = 0
        self._queue: asyncio.Queue[Invocation] | None = None
        self._by_id: dict[str, Invocation] = {}
        self.init_errors: list[tuple[dict[str, str], dict]] = []
        self.init_error_seen = threading.Event()
        # SnapStart: the runtime waits in `/restore/next` until `restore()` (the snapshot is
        # taken while it waits); a failed after-restore step is posted to `/restore/error`.
        self.polled = threading.Event()  # the runtime's first `/next`: its init is over
        self.restore_waiting = threading.Event()
        self.restore_errors: list[tuple[dict[str, str], dict]] = []
        self.restore_error_seen = threading.Event()
        self._restored: asyncio.Event | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        self._queue = asyncio.Queue()
        self._restored = asyncio.Event()
        # asyncio.start_server, but with readers that note when each byte arrived.
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: asyncio.StreamReaderProtocol(ArrivalTimedReader(), self._serve_connection),
            host,
            port,
            # A Managed Instances runtime opens a connection per poller and one per streamed
            # answer, 500 of each at once in the benchmark. With asyncio's default (100) the
            # kernel's accept queue overflowed (TcpExtListenOverflows in the thousands): a
            # handshake the client took as done was dropped, and with it an answer.
            backlog=4096,
        )
        self.port = server.sockets[0].getsockname()[1]
        return server

    def finished(self, invocation: Invocation) -> None:
        """Called on the emulator's loop once the runtime's answer is complete."""
        invocation.done.set()

    def polling(self) -> None:
        """Called on the emulator's loop as each `/next` arrives, before an event is handed out
        (the Lambda-shaped benchmark throttles the runtime here, as Lambda does after init)."""
        self.polled.set()

    def restore(self) -> None:
        """Resume a runtime waiting in `/restore/next` (call on the emulator's loop)."""
        self._restored.set()

    def put(self, invocation: Invocation) -> None:
        """Queue an invocation (call on the emulator's loop)."""
        self._by_id[invocation.request_id] = invocation
        self._queue.put_nowait(invocation)

    async def _serve_request(self, reader: asyncio.StreamReader, writer) -> bool:
        try:
            method, path, headers = await asyncio.wait_for(
                read_request_head(reader), self.idle_close_s
            )
        except TimeoutError:
            self.idle_closes += 1
            return False
        assert path.startswith("/2018-06-01/"), path

        if method == "GET" and path.endswith("/runtime/invocation/next"):
            self.polling()
            invocation = await self._queue.get()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + (
                    f"content-length: {len(invocation.event)}\r\n"
                    f"lambda-runtime-aws-request-id: {invocation.request_id}\r\n"
                    f"lambda-runtime-deadline-ms: {invocation.deadline_ms}\r\n"
                    f"lambda-runtime-invoked-function-arn: {FUNCTION_ARN}\r\n"
                    f"lambda-runtime-trace-id: {invocation.trace_id}\r\n\r\n"
                ).encode()
                + invocation.event
            )
            await writer.drain()
            invocation.delivered_at = time.monotonic()
            return True
        if method == "GET" and path.endswith("/runtime/restore/next"):
            self.restore_waiting.set()
            await self._restored.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return True
        if method == "POST" and path.endswith("/runtime/restore/error"):
            body = await self._read_body(reader, headers, [], {})
            await self._accepted(writer)
            self.restore_errors.append((headers, json.loads(body)))
            self.restore_error_seen.set()
            return True
        if method == "POST" and path.endswith("/runtime/init/error"):
            body = await self._read_body(reader, headers, [], {})
            await self._accepted(writer)
            self.init_errors.append((headers, json.loads(body)))
            self.init_error_seen.set()
            return True
        if method == "POST" and "/runtime/invocation/" in path:
            request_id = path.split("/runtime/invocation/")[1].split("/")[0]
            invocation = self._by_id.pop(request_id)
            invocation.kind = "error" if path.endswith("/error") else "response"
            invocation.request_headers = headers
            if invocation.hang_up_after_chunks is not None and invocation.streamed:
                return await self._hang_up(reader, writer, invocation)
            if invocation.read_gate is not None:
                # A small receive buffer, as a busy reader's would be: the kernel's autotuning
                # would otherwise take in tens of MiB before the sender had to wait.
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                await asyncio.to_thread(invocation.read_gate.wait, 60)
            await self._read_body(reader, headers, invocation.chunks, invocation.trailers)
            invocation.zero_chunk = "chunked" in headers.get("transfer-encoding", "")
            if not invocation.acknowledge:
                writer.close()
                self.finished(invocation)
                return False
            await self._accepted(writer)
            if invocation.streamed:
                invocation.connection_closed = await self._closed_soon(reader)
            self.finished(invocation)
            return not invocation.connection_closed
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        return True

    async def _hang_up(self, reader, writer, invocation: Invocation) -> bool:
        """Take some of a streamed response, then close the connection mid-stream: what Lambda
        may do when the function URL's caller goes away."""
        while len(invocation.chunks) < invocation.hang_up_after_chunks:
            if (chunk := await self._read_chunk(reader)) is None:
                break
            invocation.chunks.append(chunk)
        writer.close()
        invocation.hung_up_at = time.monotonic()
        self.finished(invocation)
        return False

    @staticmethod
    async def _read_chunk(reader) -> tuple[float, bytes] | None:
        """The next HTTP chunk with its arrival time; None for the zero-length chunk."""
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            return None
        data = await reader.readexactly(size + 2)
        assert data[-2:] == b"\r\n", "chunk not terminated by CRLF"
        return _arrived(reader), data[:-2]

    @classmethod
    async def _read_body(cls, reader, headers: dict, chunks: list, trailers: dict) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while (chunk := await cls._read_chunk(reader)) is not None:
                chunks.append(chunk)
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                trailers[name.strip().lower()] = value.strip()
        else:
            data = await reader.readexactly(int(headers.get("content-length", "0")))
            chunks.append((_arrived(reader), data))
        return b"".join(piece for _, piece in chunks)

    @staticmethod
    async def _closed_soon(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(1), 2) == b""
        except (TimeoutError, ConnectionError):
            return False

    @staticmethod
    async def _accepted(writer) -> None:
        body = b'{"status":"OK"}'
        writer.write(
            b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()


class ThreadedRuntimeApi:
    """The emulator on its own event loop in a thread, driven from synchronous code."""

    def __init__(self) -> None:
        self.emulator = RuntimeApiEmulator()
        self._runner = ServerThread(self.emulator)

    def start(self) -> ThreadedRuntimeApi:
        self._runner.start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.emulator.port}"

    def invoke(
        self, event: dict | bytes, deadline_in_s: float = 900.0, **details: object
    ) -> Invocation:
        """Queue an event; `details` set other `Invocation` fields (trace_id, hang-ups)."""
        data = event if isinstance(event, bytes) else json.dumps(event).encode()
        invocation = Invocation(data, int((time.time() + deadline_in_s) * 1000), **details)
        self._runner.call_soon(self.emulator.put, invocation)
        return invocation

    def restore(self) -> None:
        """SnapStart: let the runtime waiting in `/restore/next` carry on, as from a snapshot."""
        self._runner.call_soon(self.emulator.restore)

    def stop(self) -> None:
        self._runner.stop()
