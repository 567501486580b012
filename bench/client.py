"""The load client: raw asyncio HTTP/1.1 with every read timestamped, in a process of its own.

`python -m bench.client` reads one job per line (JSON) on stdin and answers each with one JSON
line on stdout, so the orchestrator's own work never competes with the timing. It speaks only
what the contenders send back (chunked or Content-Length bodies) and checks every answer's text.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource

from bench.scenario import (
    FIRST_TOKEN,
    TOOL_CALL_ANNOUNCED,
    TOOL_NAME,
    expected_text,
    tool_call_arguments,
    tool_call_prompt,
)
from bench.scenario import prompt as prompt_for

now = time.perf_counter


@dataclass
class Target:
    """Where one contender listens and how to ask it for a completion."""

    host: str
    port: int
    path: str
    wire: str  # "openai" (upstream SSE), "sse" (the relay's frames) or "text"
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, prompt: str) -> bytes:
        if self.wire == "openai":
            return self.chat_request([{"role": "user", "content": prompt}])
        return self._post({"prompt": prompt})

    def chat_request(self, messages: list[dict]) -> bytes:
        """A request that carries a conversation (a tool round trip's two steps)."""
        if self.wire == "openai":
            return self._post({"model": "gpt-5.4-mini", "messages": messages, "stream": True})
        return self._post({"messages": messages})

    def _post(self, body: dict[str, Any]) -> bytes:
        payload = json.dumps(body).encode()
        head = [
            f"POST {self.path} HTTP/1.1",
            f"host: {self.host}:{self.port}",
            "content-type: application/json",
            f"content-length: {len(payload)}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class Exchange:
    """One response as it arrives: head, de-chunked body, arrival time of each read."""

    def __init__(
        self, sent_at: float, loop: asyncio.AbstractEventLoop, first: bytes = FIRST_TOKEN
    ) -> None:
        self.sent_at = sent_at
        self.first = first  # the bytes whose arrival times the first token
        self.done = loop.create_future()
        self.status = 0
        self.keep_alive = True
        self.first_token_at: float | None = None
        self.arrivals: list[float] = []  # reads that carried body bytes, after the first token
        self.body = bytearray()
        self._raw = bytearray()
        self._pos = 0
        self._head_done = False
        self._chunked = False
        self._length: int | None = None
        self._chunk_left = -1  # -1: expecting a size line
        self.http_chunks = 0

    def feed(self, data: bytes, at: float) -> None:
        self._raw += data
        before = len(self.body)
        if not self._head_done and not self._parse_head():
            return
        if self._chunked:
            self._parse_chunks()
        else:
            self.body += self._raw[self._pos :]
            self._pos = len(self._raw)
            if self._length is not None and len(self.body) >= self._length:
                self._finish()
        if len(self.body) > before:
            if self.first_token_at is None:
                window = self.body[max(0, before - len(self.first)) :]
                if self.first in window:
                    self.first_token_at = at
                    self.arrivals.append(at)
            else:
                self.arrivals.append(at)
        if self._pos > 1 << 16:
            del self._raw[: self._pos]
            self._pos = 0

    def _parse_head(self) -> bool:
        end = self._raw.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self._raw[:end]).decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ", 2)[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "transfer-encoding" and "chunked" in value:
                self._chunked = True
            elif name == "content-length":
                self._length = int(value)
            elif name == "connection" and value == "close":
                self.keep_alive = False
        self._pos = end + 4
        self._head_done = True
        if self._length == 0:
            self._finish()
        return True

    def _parse_chunks(self) -> None:
        raw, pos = self._raw, self._pos
        while not self.done.done():
            if self._chunk_left < 0:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(raw[pos:eol]).split(b";")[0], 16)
                if size == 0:
                    if raw.find(b"\r\n", eol + 2) < 0:  # the blank line after (no trailers)
                        break
                    pos = eol + 4
                    self._finish()
                    break
                self._chunk_left, pos = size, eol + 2
            if len(raw) < pos + self._chunk_left + 2:
                break
            self.body += raw[pos : pos + self._chunk_left]
            self.http_chunks += 1
            pos += self._chunk_left + 2
            self._chunk_left = -1
        self._pos = pos

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(now())

    def fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(reason))


class Connection(asyncio.Protocol):
    """A keep-alive connection that runs one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.exchange is not None:
            self.exchange.feed(data, now())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.exchange is not None:
            if (
                self.exchange._head_done
                and not self.exchange._chunked
                and not self.exchange._length
            ):
                self.exchange._finish()  # a body delimited by the connection's end
            self.exchange.fail("connection closed mid-response")

    def send(self, request: bytes, first: bytes = FIRST_TOKEN) -> Exchange:
        self.exchange = Exchange(now(), asyncio.get_running_loop(), first)
        self.transport.write(request)
        return self.exchange


async def connect(target: Target) -> Connection:
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_connection(Connection, target.host, target.port)
    return connection


def text_of(body: bytes, wire: str) -> tuple[str, bool]:
    """The generated text in a response body, and whether the stream ended as its format says.

    Read after the answer is complete, so httpx-sse (the clients' one SSE reader) does the
    parsing; the timing above works on raw reads and never waits for it."""
    if wire == "text":
        return body.decode("utf-8", "replace"), True
    recorded = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    text: list[str] = []
    ended = False
    for event in EventSource(recorded).iter_sse():
        if not event.data:
            continue
        if wire == "openai":
            if event.data == "[DONE]":
                ended = True
                continue
            for choice in event.json().get("choices") or []:
                text.append((choice.get("delta") or {}).get("content") or "")
        elif event.event == "done":
            ended = True
        elif event.event == "message":
            text.append(event.json()["delta"])
    return "".join(text), ended


def verify(exchange: Exchange, wire: str, token_count: int) -> str | None:
    """None when the answer is complete and in order; otherwise what is wrong with it."""
    if exchange.status != 200:
        return f"HTTP {exchange.status}: {bytes(exchange.body[:200])!r}"
    try:
        text, ended = text_of(bytes(exchange.body), wire)
    except (ValueError, KeyError) as exc:
        return f"unparsable body: {exc}"
    expected = expected_text(token_count)
    if text != expected:
        return f"text differs ({len(text)} chars instead of {len(expected)})"
    if not ended:
        return "no terminal event"
    return None


def largest_gap(arrivals: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)


async def _answer(
    connection: Connection, target: Target, request: bytes, first: bytes = FIRST_TOKEN
) -> tuple[Connection, Exchange, float]:
    """One request on the keep-alive connection (a new one if the last was closed): the
    connection to go on with, the exchange, and when it finished."""
    if connection.closed:
        connection = await connect(target)
    exchange = connection.send(request, first)
    finished = await asyncio.wait_for(exchange.done, 120)
    if not exchange.keep_alive:
        connection.transport.close()
        connection.closed = True
    return connection, exchange, finished


async def sequential(
    target: Target, prompt: str, tokens: int, count: int, gap_s: float = 0
) -> dict:
    """`count` requests one after another on a keep-alive connection, `gap_s` apart: time to
    first token each."""
    request = target.request(prompt)
    connection = await connect(target)
    ttft, totals, failures, http_chunks = [], [], [], []
    for _ in range(count):
        if gap_s:
            await asyncio.sleep(gap_s)
        connection, exchange, finished = await _answer(connection, target, request)
        problem = verify(exchange, target.wire, tokens)
        if problem or exchange.first_token_at is None:
            failures.append(problem or "no first token")
        else:
            ttft.append(exchange.first_token_at - exchange.sent_at)
            totals.append(finished - exchange.sent_at)
            http_chunks.append(exchange.http_chunks)
    connection.transport.close()
    return {"ttft_s": ttft, "total_s": totals, "failures": failures, "http_chunks": http_chunks}


def tool_calls_of(body: bytes, wire: str) -> list[dict]:
    """The complete tool calls of an answer (`id`, `name`, `arguments`): assembled from
    OpenAI's pieces, or the relay's closing `tool_call` frames."""
    recorded = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    calls: dict[int, dict] = {}
    for event in EventSource(recorded).iter_sse():
        if not event.data or event.data == "[DONE]":
            continue
        if wire == "sse":
            if event.event == "tool_call" and "arguments" in event.json():
                call = event.json()
                calls[len(calls)] = {k: call[k] for k in ("id", "name", "arguments")}
            continue
        for choice in event.json().get("choices") or []:
            for piece in (choice.get("delta") or {}).get("tool_calls") or []:
                call = calls.setdefault(piece["index"], {"arguments": ""})
                call.update({k: piece[k] for k in ("id",) if piece.get(k)})
                function = piece.get("function") or {}
                if function.get("name"):
                    call["name"] = function["name"]
                call["arguments"] += function.get("arguments") or ""
    return list(calls.values())


async def tool_round_trips(
    target: Target, pieces: int, tokens: int, count: int, gap_s: float = 0
) -> dict:
    """`count` tool round trips as a frontend makes them, one after another: a question the
    model answers with a call of TOOL_NAME (its arguments in `pieces`), then the conversation
    with the call's result, answered with `tokens` tokens. Per round trip, each step's time to
    its first frame (the call's announcement, the answer's first token) and their sum."""
    question = {"role": "user", "content": tool_call_prompt(pieces)}
    asking = target.chat_request([question])
    expected = "".join(tool_call_arguments(pieces))
    connection = await connect(target)
    call_ttft, answer_ttft, failures = [], [], []
    for _ in range(count):
        if gap_s:
            await asyncio.sleep(gap_s)
        connection, call, _ = await _answer(connection, target, asking, TOOL_CALL_ANNOUNCED)
        calls = tool_calls_of(bytes(call.body), target.wire) if call.status == 200 else []
        if call.first_token_at is None or [(c.get("name"), c.get("arguments")) for c in calls] != [
            (TOOL_NAME, expected)
        ]:
            failures.append(f"HTTP {call.status}, tool calls {calls}: {bytes(call.body[-200:])!r}")
            continue
        [made] = calls
        turn = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": made["id"],
                    "type": "function",
                    "function": {"name": made["name"], "arguments": made["arguments"]},
                }
            ],
        }
        result = {"role": "tool", "tool_call_id": made["id"], "content": prompt_for(tokens)}
        connection, answer, _ = await _answer(
            connection, target, target.chat_request([question, turn, result])
        )
        problem = verify(answer, target.wire, tokens)
        if problem or answer.first_token_at is None:
            failures.append(problem or "no first token")
            continue
        call_ttft.append(call.first_token_at - call.sent_at)
        answer_ttft.append(answer.first_token_at - answer.sent_at)
    connection.transport.close()
    return {
        "ttft_s": [a + b for a, b in zip(call_ttft, answer_ttft, strict=True)],
        "call_ttft_s": call_ttft,
        "answer_ttft_s": answer_ttft,
        "failures": failures,
    }


async def concurrent(target: Target, prompt: str, tokens: int, count: int) -> dict:
    """`count` streams at once over connections opened beforehand: wall time, TTFT, gaps."""
    connections: list[Connection] = []
    for start in range(0, count, 50):  # open in batches so no accept queue overflows
        batch = min(50, count - start)
        connections += await asyncio.gather(*(connect(target) for _ in range(batch)))
    request = target.request(prompt)
    started = now()
    exchanges = [connection.send(request) for connection in connections]
    ends = await asyncio.wait_for(
        asyncio.gather(*(e.done for e in exchanges), return_exceptions=True), 300
    )
    failures, ttft, gaps = [], [], []
    for exchange, end in zip(exchanges, ends, strict=True):
        problem = (
            str(end) if isinstance(end, BaseException) else verify(exchange, target.wire, tokens)
        )
        if problem or exchange.first_token_at is None:
            failures.append(problem or "no first token")
            continue
        ttft.append(exchange.first_token_at - exchange.sent_at)
        gaps.append(largest_gap(exchange.arrivals))
    finished = max((e for e in ends if isinstance(e, float)), default=now())
    for connection in connections:
        connection.transport.close()
    return {
        "wall_s": finished - started,
        "ttft_s": ttft,
        "max_gap_s": max(gaps, default=None),
        "ok": len(ttft),
        "failures": failures[:5],
        "failed": len(failures),
    }


JOBS = {"sequential": sequential, "concurrent": concurrent, "tool_round_trips": tool_round_trips}


async def serve_jobs() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    while line := await reader.readline():
        job = json.loads(line)
        target = Target(**job.pop("target"))
        try:
            result = await JOBS[job.pop("job")](target, **job)
        except Exception as exc:  # reported, not fatal: the orchestrator records the failure
            result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(serve_jobs())
