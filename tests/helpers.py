"""Client-side helpers of the tests: read a streamed response with arrival times, parse SSE."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource

SSE = {"accept": "text/event-stream"}
EVENT_STREAM = {"content-type": "text/event-stream"}
T = TypeVar("T")


@dataclass
class Streamed:
    status: int
    headers: httpx.Headers
    chunks: list[tuple[float, bytes]]  # (seconds since the request was sent, raw bytes)

    @property
    def body(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    @property
    def text(self) -> str:
        return self.body.decode()

    def events(self) -> list[tuple[str, object]]:
        return parse_sse(self.text)


def stream(url: str, json_body: object = None, headers: dict | None = None, **kw) -> Streamed:
    """POST and record every piece of the body as it arrives."""
    started = time.monotonic()
    with httpx.stream("POST", url, json=json_body, headers=headers, timeout=30, **kw) as response:
        chunks = [(time.monotonic() - started, piece) for piece in response.iter_raw()]
        return Streamed(response.status_code, response.headers, chunks)


def parse_sse(text: str) -> list[tuple[str, object]]:
    """Events as (name, data): `message` etc. with parsed JSON data as httpx-sse reads them, and
    `comment` for `: ...` lines, in stream order. httpx-sse drops comments, as the SSE spec tells
    a client to, but the relay's keep-alive pings are comments and part of its contract."""
    events: list[tuple[str, object]] = []
    assert text == "" or text.endswith("\n\n"), f"stream does not end with a blank line: {text!r}"
    for block in text.split("\n\n")[:-1]:
        lines = block.split("\n")
        events += [("comment", line[1:].strip()) for line in lines if line.startswith(":")]
        recorded = httpx.Response(200, headers=EVENT_STREAM, content=(block + "\n\n").encode())
        events += [(e.event, e.json()) for e in EventSource(recorded).iter_sse() if e.data]
    return events


def deltas_text(events: list[tuple[str, object]]) -> str:
    return "".join(data["delta"] for name, data in events if name == "message")


class LoopbackHandler(BaseHTTPRequestHandler):
    """A test server's request handler: one call per answer, and no access log on stderr."""

    def answer(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served by a threaded HTTP server on a loopback port; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@contextmanager
def sse_server(
    body: bytes, delay_s: float = 0.0, token: str | None = None
) -> Iterator[tuple[str, dict]]:
    """A loopback server that records one POST and answers `body` all at once (after
    `delay_s`): a signing target for clients, or a relay that buffers (and, given `token`,
    refuses requests without it). Yields (url, seen)."""
    seen: dict = {}

    class Handler(LoopbackHandler):
        def do_POST(self):
            seen["path"] = self.path
            seen["headers"] = {k.lower(): v for k, v in self.headers.items()}
            seen["body"] = self.rfile.read(int(self.headers["content-length"]))
            if token and seen["headers"].get("authorization") != f"Bearer {token}":
                self.answer(401)
                return
            time.sleep(delay_s)
            self.answer(200, body, "text/event-stream")

    with loopback_server(Handler) as url:
        yield url, seen


@contextmanager
def endpoint_that_never_accepts() -> Iterator[str]:
    """A listening port whose accept queue is full and never drained: the kernel drops every
    further SYN, so a connection attempt hangs as it would against a black-holed address."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    try:
        while True:  # fill the queue until a connection can no longer be made
            probe = socket.socket()
            probe.settimeout(0.5)
            try:
                probe.connect(address)
            except TimeoutError:
                probe.close()
                break
            fillers.append(probe)
            assert len(fillers) < 64, "the accept queue never filled"
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def just_past_a_whole_second() -> float:
    """Sleep until 20 ms past a whole second of the monotonic clock (the event loop's) and
    return it: a timeout that aiohttp rounded up to a whole second would then end nearly a
    second late (handler/timeouts.py)."""
    time.sleep(1 - time.monotonic() % 1 + 0.02)
    return time.monotonic()


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` in a thread of its own: the page tests' Playwright keeps an event loop
    running in the main thread for the rest of the session."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def asgi_request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request straight into an ASGI app (no server); its unhandled errors become the
    app's own 500 response rather than an exception in the test."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
            return await client.request(method, path, **kwargs)

    return run_coroutine(call())


def request_lines(caplog, count: int = 1, within_s: float = 10.0) -> list[dict]:
    """The request log lines so far, once at least `count` are written (or `within_s` has
    passed): a line is written when the response has ended, which may be just after the
    client has read its last byte, so a fixed sleep before reading it would be a guess."""
    deadline = time.monotonic() + within_s
    while True:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "relay.request"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def logged_request(caplog, route: str, within_s: float = 10.0) -> dict:
    """The last request log line of `route`, waiting for it: the line is written when the
    response has ended, which may be just after the client has read its last byte."""
    deadline = time.monotonic() + within_s
    while True:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "relay.request"]
        lines = [line for line in lines if line["route"] == route]
        if lines or time.monotonic() > deadline:
            assert lines, f"no log line for {route}"
            return lines[-1]
        time.sleep(0.01)


@contextmanager
def counting_proxy(
    endpoint: str,
    failures: int = 0,
    failure: tuple[int, str] = (500, "InternalServerError"),
    hold: threading.Event | None = None,
) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP proxy in front of moto that notes each AWS API call's `X-Amz-Target`;
    it answers the first `failures` calls itself with `failure` (HTTP status, AWS error code),
    and, given `hold`, keeps every call waiting until that event is set."""
    targets: list[str] = []
    status, code = failure

    class Forward(LoopbackHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            targets.append(self.headers.get("x-amz-target", ""))
            number = len(targets)
            if hold is not None:
                hold.wait(60)
            if number <= failures:
                error = json.dumps({"__type": code, "message": "scripted by the test"}).encode()
                self.answer(status, error, "application/json")
                return
            skip = {"host", "content-length", "connection"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            answer = httpx.post(endpoint + self.path, content=body, headers=headers)
            self.answer(answer.status_code, answer.content, answer.headers.get("content-type"))

    with loopback_server(Forward) as url:
        yield url, targets


def run_bench(*args: object, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """`python -m bench.run ARGS` from the checkout, its output captured; it must succeed."""
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", *map(str, args)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run
