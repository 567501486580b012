"""An OpenAI-compatible streaming server on loopback: the offline demo upstream of `make dev`,
and the scriptable fake OpenAI of the tests and benchmarks.

It speaks plain HTTP/1.1 over asyncio streams (keep-alive, chunked SSE), so every byte and every
hang-up is under the script's control and on record. Run `python -m infra.demo_upstream`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field

DEMO_ANSWER = (
    "Hello! This answer comes from the **offline demo upstream**, not from OpenAI: "
    "`make dev` started it because no `OPENAI_API_KEY` was set.\n\n"
    "Each word you see was sent as its own streamed chunk, with a pause like a real model's, "
    "and the relay forwarded it the moment it arrived. Set `OPENAI_API_KEY` and run "
    "`make dev` again to talk to a real model. ✨"
)


def words_of(text: str) -> list[str]:
    """Split text into word-sized tokens that join back to exactly the same text."""
    return re.findall(r"\s*\S+|\s+", text)


@dataclass
class Script:
    """What the server does with one chat completion request."""

    tokens: list[str] = field(default_factory=lambda: words_of("Hello from the fake upstream."))
    delay_s: float = 0.0  # between two tokens
    first_delay_s: float = 0.0  # after the response headers, before the first token
    headers_delay_s: float = 0.0  # before the response headers
    jitter_s: float = 0.0  # random extra pause per token (seeded, so runs repeat)
    status: int = 200
    error_message: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)
    die_after: int | None = None  # drop the connection after this many tokens
    split_writes: bool = False  # send every event in two writes, cut mid-character
    finish_reason: str = "stop"
    model: str | None = None  # defaults to the requested model


@dataclass
class RecordedRequest:
    """One request as the server saw it, and what became of its response."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict
    peer: tuple = ()  # the client's address: the same one again means a reused connection
    received_at: float = field(default_factory=time.monotonic)
    tokens_sent: int = 0
    first_token_at: float | None = None
    finished_at: float | None = None
    hung_up_at: float | None = None
    hung_up: threading.Event = field(default_factory=threading.Event)


def _chunk(model: str, choices: list, **extra: object) -> bytes:
    event = {
        "id": "chatcmpl-demo",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": choices,
        **extra,
    }
    return (
        b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


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

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        server = await asyncio.start_server(self._serve_connection, host, port)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while await self._serve_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve_request(self, reader: asyncio.StreamReader, writer) -> bool:
        raise NotImplementedError


class OpenAICompatibleServer(LoopbackHttpServer):
    """`POST /v1/chat/completions` (streamed or JSON) answered by queued or default scripts."""

    def __init__(self, default: Script | None = None, accepted_keys: set[str] | None = None):
        self.default = default or Script()
        self.scripts: deque[Script] = deque()
        self.accepted_keys = accepted_keys  # None: any key
        self.requests: list[RecordedRequest] = []
        self._rng = random.Random(7)

    def enqueue(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def _next_script(self) -> Script:
        return self.scripts.popleft() if self.scripts else self.default

    async def _serve_request(self, reader, writer) -> bool:
        method, path, headers = await read_request_head(reader)
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        body = json.loads(raw) if raw else {}
        record = RecordedRequest(method, path, headers, body, writer.get_extra_info("peername"))
        self.requests.append(record)

        if method == "GET" and path.rstrip("/").endswith("/models"):
            models = {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}
            await self._send_json(writer, 200, models)
            return True
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            await self._send_error(writer, 404, "not found", {})
            return True
        key = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if self.accepted_keys is not None and key not in self.accepted_keys:
            # Like OpenAI, the message echoes part of the key: the relay must never pass it on.
            masked = f"{key[:3]}*****{key[-4:]}"
            await self._send_error(writer, 401, f"Incorrect API key provided: {masked}.", {})
            return True
        script = self._next_script()
        if script.headers_delay_s:
            await asyncio.sleep(script.headers_delay_s)
        if script.status != 200:
            await self._send_error(writer, script.status, script.error_message, script.headers)
            return True
        if body.get("stream"):
            return await self._stream(reader, writer, script, body, record)
        text = "".join(script.tokens)
        await self._send_json(writer, 200, self._completion(script, body, text))
        record.finished_at = time.monotonic()
        return True

    def _completion(self, script: Script, body: dict, text: str) -> dict:
        return {
            "id": "chatcmpl-demo",
            "object": "chat.completion",
            "created": 1700000000,
            "model": script.model or body.get("model", "gpt-4o-mini"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": script.finish_reason,
                }
            ],
            "usage": self._usage(script, body),
        }

    @staticmethod
    def _usage(script: Script, body: dict) -> dict:
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(script.tokens),
            "total_tokens": prompt + len(script.tokens),
        }

    async def _stream(self, reader, writer, script: Script, body: dict, record) -> bool:
        model = script.model or body.get("model", "gpt-4o-mini")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
        )
        writer.write(
            _http_chunk(
                _chunk(
                    model,
                    [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    ],
                )
            )
        )
        await writer.drain()
        watcher = asyncio.ensure_future(self._watch_hang_up(reader, record))
        try:
            if script.first_delay_s and not await self._pause(script.first_delay_s, record):
                return False
            for index, token in enumerate(script.tokens):
                if script.die_after is not None and index >= script.die_after:
                    writer.transport.abort()
                    return False
                if index and (script.delay_s or script.jitter_s):
                    pause = script.delay_s + self._rng.random() * script.jitter_s
                    if not await self._pause(pause, record):
                        return False
                event = _chunk(
                    model, [{"index": 0, "delta": {"content": token}, "finish_reason": None}]
                )
                await self._write_event(writer, event, script.split_writes)
                record.tokens_sent += 1
                if record.first_token_at is None:
                    record.first_token_at = time.monotonic()
                if record.hung_up.is_set():
                    return False
            tail = _chunk(model, [{"index": 0, "delta": {}, "finish_reason": script.finish_reason}])
            if (body.get("stream_options") or {}).get("include_usage"):
                tail += _chunk(model, [], usage=self._usage(script, body))
            writer.write(_http_chunk(tail + b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()
            record.finished_at = time.monotonic()
            return True
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _write_event(self, writer, event: bytes, split: bool) -> None:
        if split:
            # Cut inside the payload (often inside a multi-byte character) to test reassembly.
            cut = len(event) - 5
            writer.write(_http_chunk(event[:cut]))
            await writer.drain()
            await asyncio.sleep(0.002)
            writer.write(_http_chunk(event[cut:]))
        else:
            writer.write(_http_chunk(event))
        if writer.transport.get_write_buffer_size() > 65536 or split:
            await writer.drain()
        else:
            await asyncio.sleep(0)

    async def _pause(self, seconds: float, record: RecordedRequest) -> bool:
        """Sleep, but wake as soon as the client hangs up; False if it did."""
        deadline = time.monotonic() + seconds
        while not record.hung_up.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, 0.005))
        return False

    @staticmethod
    async def _watch_hang_up(reader: asyncio.StreamReader, record: RecordedRequest) -> None:
        try:
            data = await reader.read(1)
        except ConnectionError:
            data = b""
        if not data:
            record.hung_up_at = time.monotonic()
            record.hung_up.set()

    async def _send_json(self, writer, status: int, payload: dict, headers=None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n{extra}\r\n".encode()
            + data
        )
        await writer.drain()

    async def _send_error(self, writer, status: int, message: str, headers: dict) -> None:
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(
            status, "server_error"
        )
        payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        await self._send_json(writer, status, payload, headers)


class ThreadedUpstream:
    """The server on its own event loop in a background thread (tests, benchmarks, make dev)."""

    def __init__(self, server: OpenAICompatibleServer, host: str = "127.0.0.1", port: int = 0):
        self.server = server
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(host, port), daemon=True)

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        self._asyncio_server = self._loop.run_until_complete(self.server.start(host, port))
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> ThreadedUpstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/v1"

    def call_soon(self, callback, *args) -> None:
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


def demo_script() -> Script:
    return Script(tokens=words_of(DEMO_ANSWER), delay_s=0.03, jitter_s=0.04, first_delay_s=0.25)


async def _main(port: int, tokens: int | None, delay_s: float | None) -> None:
    script = demo_script()
    if tokens is not None:
        script = Script(tokens=[f"tok{i} " for i in range(tokens)], delay_s=delay_s or 0.0)
    elif delay_s is not None:
        script.delay_s, script.jitter_s, script.first_delay_s = delay_s, 0.0, 0.0
    server = OpenAICompatibleServer(default=script)
    asyncio_server = await server.start("127.0.0.1", port)
    print(f"demo upstream listening on http://127.0.0.1:{server.port}/v1", flush=True)
    async with asyncio_server:
        await asyncio_server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, help="stream N synthetic tokens instead of the demo")
    parser.add_argument("--delay", type=float, help="seconds between tokens")
    args = parser.parse_args()
    try:
        asyncio.run(_main(args.port, args.tokens, args.delay))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
