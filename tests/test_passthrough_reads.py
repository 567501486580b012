"""`/v1/chat/completions` forwards the upstream's bytes however its socket reads fall: `[DONE]`
cut across two reads, a last read of just over the 4 KiB the relay keeps of the stream's end,
the usage chunk opening a read. An upstream on loopback writes each piece of its stream alone,
a pause apart, so that the relay reads them one at a time."""

from __future__ import annotations

import asyncio
import json

import pytest

from devtools.loopback import LoopbackHttpServer, ServerThread, read_request_head
from tests.helpers import stream
from tests.test_quota import request_lines

MESSAGES = [{"role": "user", "content": "hi"}]
PAUSE_S = 0.3  # between two pieces: long enough for the relay to read each alone
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
DONE = b"data: [DONE]\n\n"


def chunk(choices: list, **extra: object) -> bytes:
    event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-5.4-mini"}
    return b"data: " + json.dumps({**event, "choices": choices, **extra}).encode() + b"\n\n"


def text(content: str, finish_reason: str | None = None) -> bytes:
    return chunk([{"index": 0, "delta": {"content": content}, "finish_reason": finish_reason}])


USAGE_CHUNK = chunk([], usage=USAGE)


class PiecewiseUpstream(LoopbackHttpServer):
    """Answers every chat completion with the same stream, written piece by piece."""

    def __init__(self, pieces: list[bytes]) -> None:
        super().__init__()
        self.pieces = pieces

    async def _serve_request(self, reader, writer) -> bool:
        _, _, headers = await read_request_head(reader)
        await reader.readexactly(int(headers.get("content-length", "0")))
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for piece in self.pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(PAUSE_S)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


@pytest.fixture
def relay_of(make_relay):
    """A relay in front of an upstream that writes `pieces`, one read each."""
    threads: list[ServerThread] = []

    def start(pieces: list[bytes]):
        thread = ServerThread(PiecewiseUpstream(pieces)).start()
        threads.append(thread)
        return make_relay(openai_base_url=f"http://127.0.0.1:{thread.server.port}/v1")

    yield start
    for thread in threads:
        thread.stop()


def v1_stream(relay, **body: object) -> bytes:
    relayed = stream(
        f"{relay.url}/v1/chat/completions", {"messages": MESSAGES, "stream": True, **body}
    )
    assert relayed.status == 200
    return relayed.body


def test_done_cut_across_two_reads_still_ends_the_stream_cleanly(relay_of):
    answer = text("Hello") + text("", "stop") + USAGE_CHUNK
    relay = relay_of([answer + DONE[:9], DONE[9:]])
    assert v1_stream(relay, stream_options={"include_usage": True}) == answer + DONE


def test_a_last_read_just_over_the_kept_tail_still_ends_the_stream_cleanly(relay_of):
    """The relay keeps the last 4 KiB of the stream to find `[DONE]` at its end; a last read
    a few bytes longer than that must keep its end, not its beginning."""
    padding = 4100 - len(text("", "stop")) - len(DONE)
    last = text("x" * padding, "stop") + DONE
    assert len(last) == 4100  # (no character of the padding needs escaping in JSON)
    relay = relay_of([text("Hello"), last])
    assert v1_stream(relay, stream_options={"include_usage": True}) == text("Hello") + last


def test_the_usage_chunk_is_taken_out_when_it_opens_a_read(relay_of):
    """A caller who did not ask for usage does not get the usage chunk the relay asked for,
    wherever the upstream's reads cut the stream."""
    answer = text("Hello") + text("", "stop")
    relay = relay_of([answer, USAGE_CHUNK + DONE])
    assert v1_stream(relay) == answer + DONE


def test_a_last_event_without_its_blank_line_still_reaches_the_caller(relay_of):
    """The relay forwards whole events only (it may take the usage chunk out of them) and holds
    back a read's unfinished end until the next read: the stream's own unfinished end, a
    `[DONE]` the upstream did not close with a blank line, goes out when the stream ends."""
    answer = text("Hello") + text("", "stop")
    relay = relay_of([answer, b"data: [DONE]\n"])
    assert v1_stream(relay) == answer + b"data: [DONE]\n"


def test_a_usage_chunk_cut_across_reads_is_still_taken_out(relay_of):
    """A read with no blank line in it is all unfinished event: none of it goes out until the
    event is whole, and then the usage chunk is recognised and taken out."""
    answer = text("Hello") + text("", "stop")
    relay = relay_of([answer, USAGE_CHUNK[:20], USAGE_CHUNK[20:] + DONE])
    assert v1_stream(relay) == answer + DONE


def test_an_upstream_that_spaces_its_json_streams_through(relay_of):
    """A compatible server writing `"usage": null` (with a space, as Python's json does) in
    every chunk: the relay passes over those keys to the usage object, in a read that opens
    with an event as in one that opens with a comment (a router's keep-alive)."""
    spaced = text("Hello").replace(b"}\n\n", b', "usage": null}\n\n')
    assert b'"usage": null' in spaced
    pieces = [spaced, b": PROCESSING\n\n" + spaced, USAGE_CHUNK + DONE]
    relay = relay_of(pieces)
    assert v1_stream(relay) == b"".join(pieces[:2]) + DONE


@pytest.mark.parametrize(
    "between",
    [b": ", b" \t  \t: \t  \t  ", b"\t" * 9 + b":", b":" + b"\t" * 9],
    ids=["as-python-json-writes", "wide-on-both-sides", "wide-before", "wide-after"],
)
def test_a_usage_chunk_with_any_white_space_around_its_colon_is_taken_out(
    relay_of, caplog, between
):
    """JSON allows any run of white space around the colon after `"usage"` (within an event's
    line: spaces and tabs). However wide the run, the relay knows the usage chunk: it does not
    reach a caller who did not ask for it, and its tokens are still counted."""
    spaced = USAGE_CHUNK.replace(b'"usage": {', b'"usage"' + between + b"{")
    assert b'"usage"' + between + b"{" in spaced
    answer = text("Hello") + text("", "stop")
    relay = relay_of([answer, spaced + DONE])
    assert v1_stream(relay) == answer + DONE
    [line] = request_lines(caplog)
    assert line["usage"] == USAGE


def test_an_event_that_is_not_json_is_forwarded_as_it_came(relay_of):
    """The relay parses only the events that may be the usage chunk; one that looks like it but
    is not JSON is passed on untouched, as any other bytes of the stream, and the usage chunk
    after it in the same read is still found and taken out."""
    answer = text("Hello") + b'data: {"usage": {not json\n\n' + text("", "stop")
    relay = relay_of([answer + USAGE_CHUNK + DONE])
    assert v1_stream(relay) == answer + DONE


def test_a_crlf_framed_usage_chunk_cut_across_reads_is_still_taken_out(relay_of):
    """The same with CR LF line ends, as some compatible servers send: a read is cut after
    the last `\\r\\n\\r\\n` in it, and nothing of the stream is lost or doubled."""

    def crlf(events: bytes) -> bytes:
        return events.replace(b"\n", b"\r\n")

    answer, usage = crlf(text("Hello") + text("", "stop")), crlf(USAGE_CHUNK)
    relay = relay_of([answer + usage[:20], usage[20:] + crlf(DONE)])
    assert v1_stream(relay) == answer + crlf(DONE)


def test_chunks_carrying_both_text_and_usage_are_forwarded(relay_of):
    """Some compatible servers put a running usage in every chunk: only a chunk with usage
    and no choices is the usage chunk the relay may take out."""
    running = text("Hello")[:-3] + b', "usage": {"completion_tokens": 1}}\n\n'
    relay = relay_of([running, USAGE_CHUNK + DONE])
    assert v1_stream(relay) == running + DONE


def test_a_last_usage_line_that_is_not_json_leaves_the_usage_unknown(relay_of, caplog):
    """A caller who asked for usage gets the stream as it came; the log has no usage to read."""
    answer = text("Hello") + text("", "stop") + b'data: {"usage": {not json\n\n' + DONE
    relay = relay_of([answer])
    assert v1_stream(relay, stream_options={"include_usage": True}) == answer
    [line] = request_lines(caplog)
    assert line["usage"] is None


@pytest.mark.parametrize("blank", [b"\n\n", b"\n\r\n"], ids=["lf", "lf-then-crlf"])
def test_blank_lines_between_events_are_forwarded_beside_the_usage_chunk(relay_of, blank):
    """Blank lines an upstream sends between events (as keep-alives, whatever their line
    ends) are part of the stream: taking the usage chunk out does not take them with it."""
    answer = text("Hello") + text("", "stop")
    relay = relay_of([answer, blank + USAGE_CHUNK + DONE])
    assert v1_stream(relay) == answer + blank + DONE


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_usage_chunk_before_an_unfinished_event_is_taken_out_whole(relay_of, line_end):
    """A read cut right after the usage chunk's blank line, the next event begun: the read goes
    out up to that blank line, which ends the usage chunk, so the chunk is taken out whole and
    none of it reaches a caller who did not ask for it (with either line end)."""

    def framed(events: bytes) -> bytes:
        return events.replace(b"\n", line_end)

    answer, usage, done = (
        framed(text("Hello") + text("", "stop")),
        framed(USAGE_CHUNK),
        framed(DONE),
    )
    relay = relay_of([answer + usage + done[:5], done[5:]])
    assert v1_stream(relay) == answer + done


def test_a_usage_chunk_begun_after_whole_events_in_a_read_is_still_taken_out(relay_of):
    """A read of whole events and then the start of the usage chunk: the whole events go out,
    the unfinished one is held back from its first byte, and once the next read finishes it,
    it is recognised as the usage chunk and taken out."""
    answer = text("Hello") + text("", "stop")
    relay = relay_of([answer + USAGE_CHUNK[:20], USAGE_CHUNK[20:] + DONE])
    assert v1_stream(relay) == answer + DONE
