"""Micro-benchmark of the `/v1` passthrough's per-read cost with and without dropping the usage
chunk the relay asks for on the caller's behalf (handler/relay.py, `PassthroughBytes`).

Run: `.venv/bin/python -m bench.passthrough_usage`. The reads are shaped like OpenAI's once
usage is asked for: one event per read, each with `"usage":null` (compact, as OpenAI writes
it), the usage chunk at the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from handler.relay import PassthroughBytes
from handler.settings import Settings


def openai_read(choices: list, usage: object) -> bytes:
    chunk = {
        "id": "chatcmpl-AbCdEf0123456789",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0123456789",
        "choices": choices,
        "usage": usage,
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"  # compact


def answer_reads(tokens: int) -> list[bytes]:
    token = [{"index": 0, "delta": {"content": " word"}, "logprobs": None, "finish_reason": None}]
    usage = {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": tokens + 9}
    return [
        *(openai_read(token, None) for _ in range(tokens)),
        openai_read([{"index": 0, "delta": {}, "finish_reason": "stop"}], None),
        openai_read([], usage),
        b"data: [DONE]\n\n",
    ]


class _Content:
    def __init__(self, reads: list[bytes]) -> None:
        self._reads = reads

    async def iter_any(self) -> AsyncIterator[bytes]:
        for read in self._reads:
            yield read


class _Response:
    """Just the part of aiohttp's response that `PassthroughBytes` reads."""

    def __init__(self, reads: list[bytes]) -> None:
        self.content = _Content(reads)


async def _forward(reads: list[bytes], drop_usage_chunk: bool, settings: Settings) -> int:
    forwarded = 0
    source = PassthroughBytes(_Response(reads), settings, drop_usage_chunk=drop_usage_chunk)
    async for piece in source:
        forwarded += len(piece)
    return forwarded


def microseconds_per_read(drop_usage_chunk: bool, answers: int, tokens: int) -> float:
    settings = Settings(_env_file=None)
    reads = answer_reads(tokens)

    async def run() -> float:
        started = time.perf_counter()
        for _ in range(answers):
            await _forward(reads, drop_usage_chunk, settings)
        return time.perf_counter() - started

    return asyncio.run(run()) / (answers * len(reads)) * 1e6


def main(answers: int = 500, tokens: int = 200, rounds: int = 7) -> dict[str, float]:
    """The best of `rounds` interleaved rounds of each: the machine's other load only adds."""
    best = {"forward_all_us": float("inf"), "drop_usage_chunk_us": float("inf")}
    for _ in range(rounds):
        for name, drop in (("forward_all_us", False), ("drop_usage_chunk_us", True)):
            best[name] = min(best[name], microseconds_per_read(drop, answers, tokens))
    for name, value in best.items():
        print(f"{name:24s} {value:8.3f} µs/read")
    return best


if __name__ == "__main__":
    main()
