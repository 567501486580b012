"""The streamed response's writer and Lambda's answer to it, against a loopback server that
plays the runtime API's end of the connection in ways the emulator does not: its answer in
pieces, without a content length, early, or a close mid-body. The writer closes the connection
only once the whole answer is in, and tells the app of a hang-up once, and only while the
response is being written."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import uvloop

from handler.runtime_api import RuntimeApi

ANSWER_BODY = b'{"status":"OK"}\n'
# Lambda's 202, cut where a reader could take it for complete too soon: before the head's end,
# at the head's end (the content length first among the headers), one byte short of the body.
ANSWER_PIECES = [
    b"HTTP/1.1 202 Accepted\r\n",
    b"Content-Length: %d\r\nContent-Type: application/json\r\n\r\n" % len(ANSWER_BODY),
    ANSWER_BODY[:-1],
    ANSWER_BODY[-1:],
]
CHUNKS = [b"first chunk", b"second chunk"]


def run_on_uvloop(coroutine):
    """In a thread of its own, on uvloop like the runtime (handler/runtime.py)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine, loop_factory=uvloop.new_event_loop).result()


async def read_request(reader: asyncio.StreamReader, chunks: int | None = None) -> list[bytes]:
    """The streamed POST's head, then its chunks: all of them up to the zero-length one and
    its trailers, or only the first `chunks`."""
    await reader.readuntil(b"\r\n\r\n")
    body = []
    while chunks is None or len(body) < chunks:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            break
        body.append((await reader.readexactly(size + 2))[:-2])
    return body


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the writer closes its side within `seconds` (it sends nothing after its body)."""
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except TimeoutError:
        return False


async def respond(lambda_end, chunks: list[bytes], hang_ups: list) -> None:
    """Serve one connection with `lambda_end`, and write `chunks` as one streamed response
    to it through the runtime's writer, as handler/runtime.py does."""
    server = await asyncio.start_server(lambda_end, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    api = RuntimeApi(f"{host}:{port}")
    async with server:
        stream = await api.open_stream("request-1", api.connect(lambda: hang_ups.append(1)))
        for chunk in chunks:
            await stream.write(chunk)
        await stream.finish()
        await asyncio.sleep(0.1)  # the close's connection_lost, which comes a turn later


def test_the_response_is_closed_only_once_lambdas_whole_answer_is_in():
    seen: dict = {}

    async def lambda_end(reader, writer) -> None:
        seen["body"] = await read_request(reader)
        for number, piece in enumerate(ANSWER_PIECES[:-1], 1):
            writer.write(piece)
            if await closed_within(reader, 0.5):
                seen["closed"] = f"after {number} of {len(ANSWER_PIECES)} pieces of the answer"
                return
        writer.write(ANSWER_PIECES[-1])
        seen["closed"] = "after the whole answer" if await closed_within(reader, 10) else "never"
        writer.close()

    hang_ups: list = []
    run_on_uvloop(respond(lambda_end, CHUNKS, hang_ups))
    assert seen == {"body": CHUNKS, "closed": "after the whole answer"}
    assert hang_ups == []


def test_an_answer_without_a_content_length_is_complete_at_its_blank_line():
    seen: dict = {}

    async def lambda_end(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
        seen["closed by the writer"] = await closed_within(reader, 10)
        writer.close()

    hang_ups: list = []
    run_on_uvloop(respond(lambda_end, CHUNKS, hang_ups))
    assert seen == {"closed by the writer": True}
    assert hang_ups == []


def test_a_close_mid_response_is_told_to_the_app_once():
    seen: dict = {}

    async def lambda_end(reader, writer) -> None:
        seen["body"] = await read_request(reader, chunks=1)
        writer.close()  # the caller went away: Lambda drops the response's connection

    hang_ups: list = []
    run_on_uvloop(respond_after_a_hang_up(lambda_end, hang_ups))
    assert seen == {"body": CHUNKS[:1]}
    assert hang_ups == [1]


def test_an_answer_before_the_body_ended_is_one_hang_up_and_no_error(caplog):
    async def lambda_end(reader, writer) -> None:
        await read_request(reader, chunks=1)
        # Lambda refuses the rest (e.g. too large) and answers at once, connection kept open.
        writer.write(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 2\r\n\r\n{}")
        await closed_within(reader, 10)
        writer.close()

    hang_ups: list = []
    with caplog.at_level(logging.ERROR):
        run_on_uvloop(respond_after_a_hang_up(lambda_end, hang_ups))
    assert hang_ups == [1]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def respond_after_a_hang_up(lambda_end, hang_ups: list) -> None:
    """Write one chunk, wait until the writer reports the hang-up, then go on as an app that
    has not yet noticed would: another chunk and the end."""
    server = await asyncio.start_server(lambda_end, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    api = RuntimeApi(f"{host}:{port}")
    async with server:
        stream = await api.open_stream("request-1", api.connect(lambda: hang_ups.append(1)))
        await stream.write(CHUNKS[0])
        for _ in range(3000):
            if hang_ups:
                break
            await asyncio.sleep(0.01)
        await stream.write(CHUNKS[1])
        await stream.finish()
        await asyncio.sleep(0.1)
