"""The HTTP/1.1 plumbing the doubles share: a keep-alive server on asyncio streams, and a thread
that runs one such server on its own event loop for synchronous callers.

Plain asyncio streams rather than a framework, so that every byte and every hang-up is under the
double's control and on record.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


async def read_request_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """Method, path and lower-cased headers of the next HTTP/1.1 request on the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, path, headers


class LoopbackHttpServer:
    """A keep-alive HTTP/1.1 server on asyncio streams; subclasses answer one request at a time
    in `_serve_request`, returning False to close the connection."""

    port: int | None = None

    def __init__(self) -> None:
        # Each connection's task, held here: asyncio keeps only weak references to tasks, and a
        # connection waiting on a queue (a runtime's idle `/next`) can otherwise be collected
        # mid-wait, losing the event later handed to it ("Task was destroyed but it is pending").
        self._connections: set[asyncio.Task] = set()

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, backlog: int = 100
    ) -> asyncio.Server:
        """Listen; `backlog` is how many connections may wait to be accepted at once."""
        server = await asyncio.start_server(self._serve_connection, host, port, backlog=backlog)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            while await self._serve_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        raise NotImplementedError


class ServerThread:
    """A `LoopbackHttpServer` on its own event loop in a daemon thread (tests, make dev/invoke)."""

    def __init__(self, server: LoopbackHttpServer, host: str = "127.0.0.1", port: int = 0):
        self.server = server
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(host, port), daemon=True)

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        self._asyncio_server = self._loop.run_until_complete(self.server.start(host, port))
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Run `callback(*args)` on the server's loop (its state belongs to that thread)."""
        self._loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self) -> None:
        self._asyncio_server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
