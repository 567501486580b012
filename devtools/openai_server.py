"""The fake OpenAI: `POST /v1/chat/completions` and `POST /v1/responses` (streamed or JSON) and
`GET /v1/models` on loopback, answering each request as its `Script` says and recording what it
saw; the events of each API are written by `devtools/openai_events.py`.

The offline demo upstream of `make dev` and `make invoke`, the tests' upstream (`enqueue` a
script per request, read `requests`), and the base of the benchmark's upstream.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from devtools.loopback import LoopbackHttpServer, ServerThread, read_request_head
from devtools.openai_events import ChatCompletionEvents, ResponsesEvents
from devtools.scripts import Script


@dataclass
class RecordedRequest:
    """One request as the server saw it, and what became of its response."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict
    peer: tuple = ()  # the client's address: the same one again means a reused connection
    # The `x-request-id` the answer carried, as OpenAI sends one with every answer.
    request_id: str = field(default_factory=lambda: f"req_{secrets.token_hex(16)}")
    received_at: float = field(default_factory=time.monotonic)
    tokens_sent: int = 0
    first_token_at: float | None = None
    finished_at: float | None = None
    hung_up_at: float | None = None
    hung_up: threading.Event = field(default_factory=threading.Event)


# The streamed APIs the fake speaks, by path under /v1.
API_EVENTS = {"/chat/completions": ChatCompletionEvents, "/responses": ResponsesEvents}


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _crlf(events: bytes) -> bytes:
    """SSE lines ended by CRLF instead of LF (JSON payloads hold no raw newline)."""
    return events.replace(b"\n", b"\r\n")


class OpenAICompatibleServer(LoopbackHttpServer):
    """`POST /v1/chat/completions` and `POST /v1/responses` (streamed or JSON) answered by
    queued or default scripts; the events of each API are in `devtools/openai_events.py`.
    Every answer carries an `x-request-id`, as OpenAI's do."""

    # Where the API lives (`base_url`), and the header the key comes in.
    api_root = "/v1"
    key_header = "authorization"

    def __init__(self, default: Script | None = None, accepted_keys: set[str] | None = None):
        super().__init__()
        self.default = default or Script()
        self.scripts: deque[Script] = deque()
        self.accepted_keys = accepted_keys  # None: any key
        self.requests: list[RecordedRequest] = []
        self._rng = random.Random(7)

    def enqueue(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def _next_script(self) -> Script:
        return self.scripts.popleft() if self.scripts else self.default

    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> OpenAICompatibleServer:
        """Start serving on a loopback port from a background thread; `stop()` ends it."""
        self._thread = ServerThread(self, host, port).start()
        return self

    @property
    def base_url(self) -> str:
        """What to give an OpenAI client as its base URL."""
        return f"http://127.0.0.1:{self.port}{self.api_root}"

    def stop(self) -> None:
        self._thread.stop()

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    async def _serve_request(self, reader, writer) -> bool:
        method, path, headers = await read_request_head(reader)
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        body = json.loads(raw) if raw else {}
        record = RecordedRequest(method, path, headers, body, writer.get_extra_info("peername"))
        self.requests.append(record)

        # (A proxy's request names the whole URL: absolute-form.)
        local_path = urlsplit(path).path if "://" in path else path
        if not local_path.startswith(self.api_root + "/"):
            await self._send_error(writer, record, 404, "not found", {})
            return True
        if method == "GET" and path.rstrip("/").endswith("/models"):
            models = {"object": "list", "data": [{"id": "gpt-5.4-mini", "object": "model"}]}
            await self._send_json(writer, record, 200, models)
            return True
        api = API_EVENTS.get(path.rstrip("/").rsplit("/v1", 1)[-1]) if method == "POST" else None
        if api is None:
            await self._send_error(writer, record, 404, "not found", {})
            return True
        key = self._key(headers)
        if key is None or (self.accepted_keys is not None and key not in self.accepted_keys):
            # Like OpenAI, the message echoes part of the key: the relay must never pass it on.
            masked = f"{(key or '')[:3]}*****{(key or '')[-4:]}"
            message = f"Incorrect API key provided: {masked}."
            await self._send_error(writer, record, 401, message, {})
            return True
        script = self._next_script()
        if script.headers_delay_s:
            await asyncio.sleep(script.headers_delay_s)
        if script.status != 200:
            await self._send_error(
                writer,
                record,
                script.status,
                script.error_message,
                script.headers,
                code=script.error_code,
            )
            return True
        events = api(script.model or body.get("model", "gpt-5.4-mini"), body, script.finish)
        if body.get("stream"):
            return await self._stream(reader, writer, script, events, record)
        record.finished_at = time.monotonic()  # before the answer goes out, as for streams
        await self._send_json(writer, record, 200, events.answer(script.tokens))
        return True

    def _key(self, headers: dict[str, str]) -> str | None:
        """The key the request came with (any, even none, when every key is accepted)."""
        key = headers.get("authorization", "").removeprefix("Bearer ").strip()
        return key if key or self.accepted_keys is None else None

    async def _stream(self, reader, writer, script: Script, events, record) -> bool:
        framed = _crlf if script.crlf else bytes
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n"
            b"x-request-id: " + record.request_id.encode() + b"\r\n\r\n"
        )
        writer.write(_http_chunk(framed(events.opening())))
        await writer.drain()
        watcher = asyncio.ensure_future(self._watch_hang_up(reader, record))
        try:
            if script.first_delay_s and not await self._pause(script.first_delay_s, record):
                return False
            for index, token in enumerate(script.tokens):
                if script.die_after is not None and index >= script.die_after:
                    # The tokens sent reach the client before the connection dies: aiohttp
                    # raises a broken connection ahead of data it has not handed out yet, so a
                    # token and the break read in one turn would lose the token at random.
                    await writer.drain()
                    await asyncio.sleep(0.02)
                    writer.transport.abort()
                    return False
                if script.error_after is not None and index >= script.error_after:
                    failure = framed(events.failure(script.error_message))
                    writer.write(_http_chunk(failure) + b"0\r\n\r\n")
                    await writer.drain()
                    return True
                if index and (script.delay_s or script.jitter_s):
                    pause = script.delay_s + self._rng.random() * script.jitter_s
                    if not await self._pause(pause, record):
                        return False
                await self._write_event(writer, framed(events.delta(token)), script.split_writes)
                record.tokens_sent += 1
                if record.first_token_at is None:
                    record.first_token_at = time.monotonic()
                if record.hung_up.is_set():
                    return False
            pieces = 0
            for index, call in enumerate(script.tool_calls):
                # Chat Completions only: the Responses API's tool events are not scripted.
                await self._write_event(
                    writer, events.tool_call_start(index, call.id, call.name), False
                )
                for piece in call.arguments:
                    if script.delay_s and not await self._pause(script.delay_s, record):
                        return False
                    await self._write_event(
                        writer, events.tool_call_arguments(index, piece), script.split_writes
                    )
                    pieces += 1
            ending = script.ending
            if ending is None:
                ending = events.closing(script.tokens, pieces)
            # Noted before the last bytes go out: a client that has read the whole answer finds
            # it set (after the drain, its reader could be first).
            record.finished_at = time.monotonic()
            writer.write((_http_chunk(framed(ending)) if ending else b"") + b"0\r\n\r\n")
            await writer.drain()
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

    async def _send_json(self, writer, record, status: int, payload: dict, headers=None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"x-request-id": record.request_id, **(headers or {})}
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n{extra}\r\n".encode()
            + data
        )
        await writer.drain()

    async def _send_error(
        self, writer, record, status: int, message: str, headers: dict, code: str | None = None
    ) -> None:
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(
            status, "invalid_request_error" if code else "server_error"
        )
        payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        await self._send_json(writer, record, status, payload, headers)


class AzureOpenAIServer(OpenAICompatibleServer):
    """Azure OpenAI's v1 API as the relay meets it: under `/openai/v1/` of the resource's
    endpoint, the key in an `api-key` header. A key sent as `Authorization: Bearer` is refused
    (Azure reads a bearer as a Microsoft Entra token), as is any request outside `/openai/v1/`."""

    api_root = "/openai/v1"

    def _key(self, headers: dict[str, str]) -> str | None:
        if "authorization" in headers:
            return None
        return headers.get("api-key") or None
