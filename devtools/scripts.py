"""What the fake OpenAI does with a request: the `Script` of one answer (tokens, pauses, failures)
and the canned demo answer `make dev` streams when no OpenAI key is set.
"""

from __future__ import annotations

import re
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
class ScriptedToolCall:
    """A tool call the fake model makes after its text: its arguments in the pieces given."""

    name: str
    arguments: list[str] = field(default_factory=lambda: ["{}"])
    id: str = "call_demo_1"


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
    error_code: str | None = None  # the error body's `code` (OpenAI's `model_not_found` ...)
    headers: dict[str, str] = field(default_factory=dict)
    die_after: int | None = None  # drop the connection after this many tokens
    error_after: int | None = None  # after this many tokens, send an error event and end
    split_writes: bool = False  # send every event in two writes, cut mid-character
    finish_reason: str = "stop"  # `tool_calls` when the script makes tool calls
    model: str | None = None  # defaults to the requested model
    tool_calls: list[ScriptedToolCall] = field(default_factory=list)  # after the tokens
    crlf: bool = False  # frame the SSE lines with \r\n, as some OpenAI-compatible servers do
    # Sent after the tokens in place of the API's closing events (finish_reason, usage, [DONE]),
    # before the body ends cleanly: b"" is a stream cut short, b"data: {oops\n\n" a bad chunk.
    ending: bytes | None = None

    @property
    def finish(self) -> str:
        if self.tool_calls and self.finish_reason == "stop":
            return "tool_calls"
        return self.finish_reason


def demo_script() -> Script:
    """The demo answer, word by word, at the pace of a real model."""
    return Script(tokens=words_of(DEMO_ANSWER), delay_s=0.03, jitter_s=0.04, first_delay_s=0.25)


def synthetic_script(tokens: int, delay_s: float = 0.0) -> Script:
    """`tokens` numbered tokens `delay_s` apart (the demo CLI's `--tokens`)."""
    return Script(tokens=[f"tok{i} " for i in range(tokens)], delay_s=delay_s)
