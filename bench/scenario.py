"""What the benchmark asks for and what must come back: synthetic token streams named by prompt.

Every contender sends the prompt `bench tokens=N delay_ms=D`; the bench upstream answers it with
N distinct tokens D ms apart, so any lost or reordered chunk shows in the text a client gets.
A tool round trip (issue 28) asks `bench tool_call pieces=N delay_ms=D`: the upstream calls
TOOL_NAME with its arguments in N pieces D ms apart, and the client's tool result is the next
answer's prompt.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PROMPT = re.compile(r"bench tokens=(\d+) delay_ms=(\d+(?:\.\d+)?)")
_TOOL_CALL_PROMPT = re.compile(r"bench tool_call pieces=(\d+) delay_ms=(\d+(?:\.\d+)?)")
TOOL_NAME = "bench_lookup"
TOOL_PIECES = 3  # a tool call's arguments arrive in this many pieces


def prompt(tokens: int, delay_ms: float = 0) -> str:
    return f"bench tokens={tokens} delay_ms={delay_ms:g}"


def parse_prompt(text: str) -> tuple[int, float] | None:
    """(tokens, delay in seconds) for a benchmark prompt, None for anything else."""
    match = _PROMPT.fullmatch(text.strip())
    if match is None:
        return None
    return int(match.group(1)), float(match.group(2)) / 1000


@lru_cache(maxsize=64)
def tokens(count: int) -> tuple[str, ...]:
    """Word-sized tokens, each distinct, so the joined text proves order and completeness."""
    return tuple(f"tok{i} " for i in range(count))


def expected_text(count: int) -> str:
    return "".join(tokens(count))


def tool_call_prompt(pieces: int, delay_ms: float = 0) -> str:
    return f"bench tool_call pieces={pieces} delay_ms={delay_ms:g}"


def parse_tool_call_prompt(text: str) -> tuple[int, float] | None:
    """(argument pieces, delay in seconds between them) for a tool-call prompt, None for
    anything else."""
    match = _TOOL_CALL_PROMPT.fullmatch(text.strip())
    if match is None:
        return None
    return max(2, int(match.group(1))), float(match.group(2)) / 1000


@lru_cache(maxsize=8)
def tool_call_arguments(pieces: int) -> tuple[str, ...]:
    """A call's JSON arguments cut into `pieces` (at least 2), so they join back to one object."""
    return ('{"q":"', *(f"p{i}" for i in range(pieces - 2)), '"}')


FIRST_TOKEN = tokens(1)[0].encode()  # the bytes whose arrival is the time to first token
# The bytes whose arrival is a tool call's first frame: its name, in OpenAI's first chunk and in
# the relay's announcing `tool_call` frame alike.
TOOL_CALL_ANNOUNCED = TOOL_NAME.encode()
