"""The stream-source interface is all the streaming response needs: any source that iterates,
closes and sums itself up streams through `start_stream`, framed by the wire format."""

from __future__ import annotations

import asyncio

from handler.errors import UPSTREAM_ERROR, RelayError
from handler.requestlog import RequestLog
from handler.sources import StreamSource, StreamSummary
from handler.sse import SseWire
from handler.streaming import start_stream
from tests.helpers import parse_sse, run_coroutine


class ScriptedDeltas:
    """A source of its own, written against the Protocol only: batches, then maybe a failure."""

    def __init__(self, batches: list[list[str]], failure: RelayError | None = None) -> None:
        self.batches, self.failure, self.closed, self.sent = batches, failure, False, 0

    async def __aiter__(self):
        for batch in self.batches:
            self.sent += len(batch)
            yield batch
        if self.failure:
            raise self.failure

    def close(self) -> None:
        self.closed = True

    def summary(self) -> StreamSummary:
        return StreamSummary(
            model="m-1", usage={"total_tokens": 3}, finish_reason="stop", chunks=self.sent
        )


async def _run(source: StreamSource[list[str]]) -> tuple[list[dict], RequestLog]:
    record = RequestLog(request_id="r", route="POST /chat")
    response = await start_stream(
        SseWire(), source, record=record, timeout_s=5, ping_interval_s=1, deadline_margin_s=1
    )
    sent: list[dict] = []
    finished = asyncio.Event()

    async def receive() -> dict:
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await response({"type": "http", "extensions": {}}, receive, send)
    finished.set()
    return sent, record


def test_a_source_written_to_the_protocol_streams_and_is_summed_up():
    source = ScriptedDeltas([["a", "b"], ["c"]])
    sent, record = run_coroutine(_run(source))
    start, *body = sent
    headers = dict(start["headers"])
    assert start["status"] == 200
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert b"content-length" not in headers  # open-ended: the server frames it as chunked
    events = parse_sse(b"".join(m["body"] for m in body).decode())
    assert events[-1] == (
        "done",
        {"finish_reason": "stop", "model": "m-1", "usage": {"total_tokens": 3}},
    )
    assert (record.chunks, record.model, record.usage) == (3, "m-1", {"total_tokens": 3})
    assert source.closed


def test_a_failing_source_ends_with_one_error_frame_and_is_closed():
    source = ScriptedDeltas([["a"]], RelayError(UPSTREAM_ERROR, "it broke"))
    sent, record = run_coroutine(_run(source))
    events = parse_sse(b"".join(m.get("body", b"") for m in sent[1:]).decode())
    assert events[-1] == ("error", {"error": {"type": "upstream_error", "message": "it broke"}})
    assert (record.outcome, record.error_type) == ("upstream_error", "upstream_error")
    assert source.closed
