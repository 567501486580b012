"""chat-client.js's SSE parser, run in the real browser, against a table of tricky inputs, each
fed whole, split at every position, and one character at a time."""

from __future__ import annotations

import json

import pytest

CASES = [
    ("one frame", 'data: {"delta":"a"}\n\n', [("message", '{"delta":"a"}')]),
    ("two frames in one read", "data: a\n\ndata: b\n\n", [("message", "a"), ("message", "b")]),
    (
        "CRLF line ends",
        "data: a\r\n\r\nevent: done\r\ndata: {}\r\n\r\n",
        [("message", "a"), ("done", "{}")],
    ),
    ("lone CR line ends", "data: a\r\rdata: b\r\r", [("message", "a"), ("message", "b")]),
    (
        "comments",
        ": ping\n\ndata: a\n: inside\n\n",
        [("#", "ping"), ("#", "inside"), ("message", "a")],
    ),
    ("multi-line data", "data: line one\ndata: line two\n\n", [("message", "line one\nline two")]),
    ("no space after colon", "data:tight\n\n", [("message", "tight")]),
    ("only one space is stripped", "data:  two\n\n", [("message", " two")]),
    ("named events", 'event: error\ndata: {"error":{}}\n\n', [("error", '{"error":{}}')]),
    ("event name resets", "event: done\ndata: x\n\ndata: y\n\n", [("done", "x"), ("message", "y")]),
    ("ids and retries are ignored", "id: 7\nretry: 100\ndata: a\n\n", [("message", "a")]),
    ("empty data line", "data\n\n", [("message", "")]),
    ("non-ASCII", "data: ✨ wörld 日本\n\n", [("message", "✨ wörld 日本")]),
    ("missing final blank line", "data: a\n\ndata: unfinished\n", [("message", "a")]),
    ("event without data is dropped", "event: done\n\n", []),
]

RUN = """async ([pieces]) => {
  const { SseParser } = await import("/static/chat-client.js");
  const parser = new SseParser();
  const events = [];
  for (const piece of pieces) events.push(...parser.push(piece));
  events.push(...parser.end());
  return events.map((e) => (e.comment !== undefined ? ["#", e.comment] : [e.event, e.data]));
}"""


@pytest.fixture
def module_page(page, relay):
    page.goto(relay.url)
    return page


def splits(text: str):
    yield [text]
    for at in range(1, len(text)):
        yield [text[:at], text[at:]]
    yield list(text)


@pytest.mark.parametrize(("name", "stream", "expected"), CASES, ids=[c[0] for c in CASES])
def test_parser_handles(module_page, name, stream, expected):
    for pieces in splits(stream):
        events = module_page.evaluate(RUN, [pieces])
        assert [tuple(e) for e in events] == expected, (name, json.dumps(pieces))
