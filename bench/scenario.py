"""What the benchmark asks for and what must come back: synthetic token streams named by prompt.

Every contender sends the prompt `bench tokens=N delay_ms=D`; the bench upstream answers it with
N distinct tokens D ms apart, so any lost or reordered chunk shows in the text a client gets.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PROMPT = re.compile(r"bench tokens=(\d+) delay_ms=(\d+(?:\.\d+)?)")


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


FIRST_TOKEN = tokens(1)[0].encode()  # the bytes whose arrival is the time to first token
